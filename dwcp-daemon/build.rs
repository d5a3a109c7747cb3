//! Records the build's target, profile and git commit for `/api/v1/info`.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::var("DWCP_GIT_COMMIT").unwrap_or_else(|_| "unknown".into()));
    println!("cargo:rustc-env=DWCP_BUILD_COMMIT={commit}");
    for var in ["TARGET", "PROFILE"] {
        let v = std::env::var(var).unwrap_or_else(|_| "unknown".into());
        println!("cargo:rustc-env=DWCP_BUILD_{var}={v}");
    }
    println!("cargo:rerun-if-env-changed=DWCP_GIT_COMMIT");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
