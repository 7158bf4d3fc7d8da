//! Issue 9: records and snapshots are written atomically. A child process
//! rewrites a large record and a large insta snapshot in a loop, each time
//! switching between two versions, and is killed with SIGKILL at seeded
//! random moments; every time, each file is one of the two versions, whole.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gevaldi::artifact::{ErrorRecord, Record};
use gevaldi::snapshot::Summary;
use rand::{Rng, SeedableRng};

const NAME: &str = "big";

/// A summary with `n` sample lines (a snapshot of ~n × 200 bytes), marked
/// by `version`.
fn summary(version: &str, n: usize) -> Summary {
    // Each sample its own index: a snapshot naming a key twice fails.
    let samples: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "index": i, "divergence": [0.1, 2.5], "set_distance": null,
                "before": ["7 (0.41)", "3 (0.35)"],
                "after": [format!("{version} (0.88)"), "8 (0.87)"],
            })
        })
        .collect();
    let stats = serde_json::json!({"mean": 1.0, "median": 1.0, "max": 2.0});
    serde_json::from_value(serde_json::json!({
        "pair": NAME,
        "models": ["a", "b"], "generator": version.repeat(n * 200),
        "settings": {"divergence": "kl", "optimizer": "adam", "lr": 0.05, "lambda": 0.01,
                     "batch": n, "steps": 1, "seed": 0},
        "steps_run": 1,
        "divergence": {"before": stats, "after": stats},
        "baseline": stats, "lift": 1.0, "mean_dz": 0.5, "set_distance": null,
        "thresholds": {"max_divergence": null, "statistic": "max", "min_lift": null,
                       "max_set_distance": null},
        "samples": samples,
    }))
    .unwrap()
}

fn record(version: &str) -> Record {
    Record::Error(ErrorRecord {
        trial: format!("pair::{version}"),
        message: version.repeat(3_000_000),
        written_at: 0,
    })
}

/// Rewrites the record and the snapshot in `GEVALDI_ATOMIC_DIR` until
/// killed; writes `ready` once both versions of each were written.
#[test]
#[ignore = "run as a child process by atomic_writes_survive_sigkill"]
fn atomic_writer_child() {
    let Some(dir) = std::env::var_os("GEVALDI_ATOMIC_DIR").map(PathBuf::from) else {
        // Run by itself (`--include-ignored`): nothing to do.
        println!(
            "atomic_writer_child is a helper: atomic_writes_survive_sigkill runs it in a \
             child process with GEVALDI_ATOMIC_DIR set; without it, it does nothing"
        );
        return;
    };
    let config = dir.join("gevaldi.toml");
    let (a, b) = (summary("A", 6000), summary("B", 6000));
    let (ra, rb) = (record("A"), record("B"));
    let mut first = true;
    loop {
        for (s, r, v) in [(&a, &ra, "A"), (&b, &rb, "B")] {
            s.check_snapshot(&config).unwrap();
            r.write(&dir.join("record.json")).unwrap();
            if first {
                let snap = snapshot_path(&dir);
                std::fs::copy(&snap, dir.join(format!("expected-{v}.snap"))).unwrap();
            }
        }
        if first {
            std::fs::write(dir.join("ready"), b"").unwrap();
            first = false;
        }
    }
}

#[test]
fn atomic_writes_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("gevaldi-atomic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let snap = snapshot_path(&dir);
    let record_path = dir.join("record.json");
    let mut seen = [0usize; 2];
    for round in 0..8 {
        let _ = std::fs::remove_file(dir.join("ready"));
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "atomic_writer_child", "--nocapture"])
            .env("GEVALDI_ATOMIC_DIR", &dir)
            .env("INSTA_UPDATE", "always")
            .env_remove("CI")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !dir.join("ready").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the child never got ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let expected = |v: &str| std::fs::read(dir.join(format!("expected-{v}.snap"))).unwrap();
        let got = std::fs::read(&snap).unwrap();
        let version = if got == expected("A") {
            0
        } else if got == expected("B") {
            1
        } else {
            panic!(
                "round {round}: the snapshot is neither version ({} bytes)",
                got.len()
            );
        };
        seen[version] += 1;
        match Record::read(&record_path) {
            Ok(Record::Error(e)) => assert!(
                e.message.len() == 3_000_000 && (e.trial == "pair::A" || e.trial == "pair::B"),
                "round {round}: a record of the wrong size"
            ),
            other => panic!("round {round}: {other:?}"),
        }
        // No temporary file of the record is left beside it but the killed
        // writer's own, which the next write of the same file replaces.
        assert!(count_tmp(&dir) <= 1, "round {round}");
    }
    println!(
        "the snapshot was version A {} times, B {} times",
        seen[0], seen[1]
    );
    // Temporary files of killed writers are removed by the next write.
    std::env::set_var("INSTA_UPDATE", "always");
    summary("C", 1)
        .check_snapshot(&dir.join("gevaldi.toml"))
        .unwrap();
    let snapshots = snap.parent().unwrap();
    assert_eq!(
        count_tmp(snapshots),
        0,
        "{:?}",
        std::fs::read_dir(snapshots)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshots")
        .join("gevaldi")
        .join(format!("pair-{NAME}.snap"))
}

fn count_tmp(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count()
}
