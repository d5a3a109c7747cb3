//! Flow control on a long, lossy path (virtual time): every lost segment
//! holds what follows it for a round trip, so the receiver's application
//! reads in bursts after each hole is repaired. The receive windows must
//! still grow to what the path holds, or a stream on a 100 Mbit/s, 200 ms
//! link with a few percent loss moves a fraction of what the link carries.

use std::time::Duration;

use dwcp_core::sim::{run_traffic, LinkConfig, Pair, Traffic};
use dwcp_core::{Config, OpenParams};

/// One stream of `mib` MiB over `mbit`, `rtt_ms` and `loss`: the seconds
/// the whole transfer took, the seconds its second half took, and the
/// segments the link lost.
fn transfer(mbit: u64, rtt_ms: u64, loss: f64, mib: u64) -> (f64, f64, u64) {
    let link = LinkConfig {
        bandwidth_bps: mbit * 1_000_000,
        one_way_delay: Duration::from_millis(rtt_ms / 2),
        loss,
        // The link's own queue holds a bandwidth-delay product, as the
        // emulators' do.
        send_buffer: (mbit * 1_000_000 / 8 * rtt_ms / 1000) as usize,
        seed: 5,
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(Config::default(), Config::default(), link);
    let mut client = Traffic::new();
    let mut server = Traffic::new();
    client.add_stream(OpenParams::default(), mib << 20, 1);
    let half = (mib << 20) / 2;
    let mut half_at = None;
    let ok = run_traffic(
        &mut pair,
        &mut client,
        &mut server,
        Duration::from_secs(600),
        |p, _, s| {
            if half_at.is_none() && s.bytes_read >= half {
                half_at = Some(p.elapsed());
            }
            s.finished_count() == 1
        },
    );
    assert!(
        ok,
        "the stream did not finish: {} bytes read",
        server.bytes_read
    );
    let id = client.opened[0];
    let r = &server.received[&id];
    assert_eq!(r.len, mib << 20);
    assert!(r.error.is_none(), "{:?}", r.error);
    let total = pair.elapsed();
    let second_half = total - half_at.unwrap_or_default();
    (
        total.as_secs_f64(),
        second_half.as_secs_f64(),
        pair.client.link.lost,
    )
}

#[test]
fn windows_grow_past_the_holes_of_a_lossy_long_path() {
    let mut failed = Vec::new();
    for (rtt_ms, loss) in [(200, 0.05), (100, 0.02), (200, 0.0), (50, 0.01)] {
        let mib = 96;
        let (secs, second_half, lost) = transfer(100, rtt_ms, loss, mib);
        // Once the windows have grown, the stream keeps the link busy: the
        // second half moves at 90 % of the link rate or better.
        let link_half = (mib << 19) as f64 * 8.0 / 100e6;
        let share = link_half / second_half;
        eprintln!(
            "100 Mbit/s, {rtt_ms} ms, {:.0} % loss: {mib} MiB in {secs:.2} s, \
             the second half at {:.0} % of the link ({lost} segments lost)",
            loss * 100.0,
            share * 100.0
        );
        assert!(loss == 0.0 || lost > 0, "loss was exercised");
        if share < 0.9 {
            failed.push(format!(
                "{rtt_ms} ms, {loss}: second half at {:.0} % of the link",
                share * 100.0
            ));
        }
        // And the windows get there in a few seconds: the whole transfer,
        // their growth included, at 70 % of the link or better (windows that
        // doubled only within two RTTs took 13 s here at 5 % loss, 64 %).
        let whole = (mib << 20) as f64 * 8.0 / 100e6 / secs;
        if whole < 0.7 {
            failed.push(format!(
                "{rtt_ms} ms, {loss}: the transfer at {:.0} % of the link",
                whole * 100.0
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}
