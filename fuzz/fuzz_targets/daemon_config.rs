//! The daemon's configuration loader: arbitrary text, then `KEY=VALUE`
//! overrides (as from `DWCP_*` variables) after a NUL byte. Every outcome is
//! a configuration or a list of problems with their keys; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let overrides: Vec<(String, String)> = String::from_utf8_lossy(rest)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(cfg) = dwcp_daemon::config::parse(text, "fuzz", &overrides) {
        // A configuration that parses is usable as the daemon would use it.
        let _ = cfg.class_list();
    }
});
