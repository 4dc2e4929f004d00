//! The bench commands run end to end and say whether they fsynced.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .env("STREAMHOUSE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bench_pipeline_and_produce_with_and_without_fsync() {
    for (extra, fsync) in [(None, true), (Some("--unsafe-no-fsync"), false)] {
        let mut args = vec!["pipeline", "--seconds", "0.3", "--partitions", "2"];
        args.extend(extra);
        let out = bench(&args);
        assert!(out.contains(&format!("\"fsync\":{fsync}")), "{out}");
        assert!(out.contains("\"records_per_sec\""), "{out}");

        let mut args = vec!["produce", "--duration", "0.5", "--partitions", "2"];
        args.extend(extra);
        let out = bench(&args);
        assert!(out.contains(&format!("\"fsync\":{fsync}")), "{out}");
    }
    // Against a running agent the flag would be ignored: it is refused.
    let out = Command::new(BIN)
        .args([
            "bench",
            "produce",
            "--agent",
            "127.0.0.1:1",
            "--unsafe-no-fsync",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
