//! Test support shared by every suite that starts real servers.
//!
//! `free_port` used to ask the kernel for an ephemeral port (`bind :0`) and
//! release it. That raced twice over: the kernel may hand the same port to
//! the next caller (CI once got one port for an Envoy admin listener and its
//! inbound), and any outgoing connection may take it before the server binds.
//! Here ports come from below the kernel's ephemeral range, so no client
//! socket is ever given one, and a process-wide set guarantees that no port
//! is handed out twice by one test binary.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// Ports handed out are taken from `[LOW, HIGH)`, which lies below Linux's
/// default ephemeral range (32768–60999) and above well-known services.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

struct Allocator {
    next: u16,
    given: HashSet<u16>,
}

static ALLOCATOR: Mutex<Option<Allocator>> = Mutex::new(None);

/// A loopback port that nothing listens on (TCP and UDP, on 0.0.0.0 and so on
/// 127.0.0.1 too) and that this process has not handed out before.
///
/// Panics when the whole range is in use, which means the machine is broken
/// rather than the test.
pub fn free_port() -> u16 {
    let mut guard = ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner());
    let alloc = guard.get_or_insert_with(|| Allocator {
        // Test binaries run one after another, but two checkouts may test at
        // once: start each process at its own place in the range.
        next: LOW + (std::process::id() % 97) as u16 * ((HIGH - LOW) / 97),
        given: HashSet::new(),
    });
    for _ in 0..(HIGH - LOW) {
        let port = alloc.next;
        alloc.next = if port + 1 >= HIGH { LOW } else { port + 1 };
        if alloc.given.contains(&port) || !bindable(port) {
            continue;
        }
        alloc.given.insert(port);
        return port;
    }
    panic!("no free port in {LOW}..{HIGH}");
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The directory holding the `kuma-cp` and `kuma-dp` binaries that suites run
/// as processes (`release` picks the release profile).
///
/// With `KUMA_TEST_BIN_DIR` set (scripts/test.sh sets it once `cargo test
/// --no-run` has built every target, these binaries included) that directory
/// is used as is: no cargo run from inside a test, which would resolve the
/// workspace's features differently from `cargo test` and link both binaries
/// again. Otherwise `cargo build -p kuma-cp-bin -p kuma-dp-bin` builds them
/// (a no-op when fresh).
pub fn bin_dir(release: bool) -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    if let Some(dir) = std::env::var_os("KUMA_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "-p", "kuma-cp-bin", "-p", "kuma-dp-bin"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "building kuma-cp and kuma-dp failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join(if release { "release" } else { "debug" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            assert!((LOW..HIGH).contains(p), "{p} outside {LOW}..{HIGH}");
        }
        // A port handed out can be bound by the caller.
        let l = TcpListener::bind(("127.0.0.1", ports[0])).expect("bind the port");
        // And it is never handed out again while in use or afterwards.
        drop(l);
        assert!(!(0..50).map(|_| free_port()).any(|p| p == ports[0]));
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let first = free_port();
        let _held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, first + 1));
        let second = free_port();
        assert_ne!(second, first + 1);
    }
}
