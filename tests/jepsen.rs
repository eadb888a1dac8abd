//! Network faults on a real cluster: partitions (random halves, the leader
//! isolated, bridges, one-way), packet loss and delay, SIGKILL + restart,
//! SIGSTOP / SIGCONT, leadership transfers and membership changes, under
//! concurrent clients, with a checker over the history (see `netns/checker.rs`).
//!
//! Needs root (network namespaces, nft, iptables NFQUEUE, python3): run as
//! `scripts/test.sh` does,
//!
//! ```sh
//! cargo test --test jepsen -- --ignored --nocapture --test-threads=1
//! ```
//!
//! A soak with a given seed: `NEMESIS_SEED=42 NEMESIS_DURATION=1200 cargo test
//! --test jepsen nemesis_5_nodes -- --ignored --nocapture`. The checker's own
//! tests (synthetic histories) run in the ordinary suite.

mod netns;

#[test]
#[ignore = "root only: run by the nemesis block of scripts/test.sh"]
fn nemesis_3_nodes() {
    netns::run::run(3);
}

#[test]
#[ignore = "root only: run by the nemesis block of scripts/test.sh"]
fn nemesis_5_nodes() {
    netns::run::run(5);
}

#[test]
fn schedules_are_reproducible_from_the_seed() {
    use std::time::Duration;
    let a = netns::nemesis::schedule(7, 5, Duration::from_secs(120));
    let b = netns::nemesis::schedule(7, 5, Duration::from_secs(120));
    let show = |s: &[netns::nemesis::Phase]| format!("{s:?}");
    assert_eq!(show(&a), show(&b));
    assert_ne!(
        show(&a),
        show(&netns::nemesis::schedule(8, 5, Duration::from_secs(120)))
    );
    // The CI run (both sizes, the default length) shows every kind of fault.
    let ci = std::time::Duration::from_secs(netns::run::DEFAULT_DURATION_S);
    for seed in 0..50 {
        let kinds: std::collections::BTreeSet<&str> = [3, 5]
            .iter()
            .flat_map(|&n| netns::nemesis::schedule(seed, n, ci))
            .flat_map(|p| p.faults.into_iter().map(|f| f.kind()))
            .collect();
        assert_eq!(
            kinds.len(),
            netns::nemesis::KINDS as usize,
            "seed {seed}: {kinds:?}"
        );
    }
}
