//! Records the build's target, profile and git commit for `/api/v1/info`.

use std::path::Path;

/// `git ARGS`'s first line of output, if git ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .unwrap_or_else(|| std::env::var("DWCP_GIT_COMMIT").unwrap_or_else(|_| "unknown".into()));
    println!("cargo:rustc-env=DWCP_BUILD_COMMIT={commit}");
    for var in ["TARGET", "PROFILE"] {
        let v = std::env::var(var).unwrap_or_else(|_| "unknown".into());
        println!("cargo:rustc-env=DWCP_BUILD_{var}={v}");
    }
    println!("cargo:rerun-if-env-changed=DWCP_GIT_COMMIT");
    // A commit moves the branch HEAD names, not HEAD itself (`ref:
    // refs/heads/main`): watching HEAD alone left the commit of the build
    // before in `/api/v1/info`. HEAD's reflog (`logs/HEAD`) changes with
    // every commit and checkout, also after `git gc` packed the branch's
    // ref away; the branch ref and `packed-refs` (in the common directory
    // of a linked worktree) are watched too. Only files that exist are
    // named: cargo runs the script on every build for a path that does not.
    let mut watch = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        watch.push(dir.join("HEAD"));
        watch.push(dir.join("logs").join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = Path::new(&common);
        watch.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(branch));
        }
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
