//! `coap-bench` end to end, briefly: every column it measures (our `coap-server`, libcoap's
//! `coap-server-notls` from the Debian package `libcoap3-bin`, and its raw echo servers)
//! answers its generator, and the tables and ratios come out. Rates are not checked here:
//! they are measured by running the tool, never by a test.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_coap-bench");

fn rows(table: &str) -> Vec<(String, f64)> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| server") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].to_string(),
                cells[2].parse::<f64>().unwrap_or(-1.0),
            )
        })
        .collect()
}

#[test]
fn every_column_is_measured_with_its_generator_share() {
    assert!(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("coap-server-notls").is_file()),
        "coap-server-notls not found on PATH: install the Debian package libcoap3-bin"
    );
    // -b 0: leave the system's socket buffer default alone; two (P, W) pairs, short runs.
    let out = Command::new(BENCH)
        .args([
            "-P", "8,200", "-W", "2,1", "-D", "0.3", "-R", "1", "-b", "0",
        ])
        .output()
        .expect("run coap-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "coap-bench failed:\n{stdout}\n{stderr}"
    );
    let rows = rows(&stdout);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    let columns = [
        "coap-engine coap-server",
        "libcoap coap-server-notls",
        "raw echo, batched",
        "raw echo",
    ];
    assert_eq!(names, [columns, columns].concat(), "{stdout}");
    for (name, rate) in &rows {
        assert!(*rate > 0.0, "{name} answered nothing:\n{stdout}\n{stderr}");
    }
    for line in [
        "ratio (ours / libcoap",
        "ratio (ours / raw echo, batched",
        "rate at P=200 W=1 relative to P=8 W=2",
        "| server | responses/s | p50 | p99 | server CPU | generator CPU |",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(
        stderr.contains("generator: 200 clients, raw CoAP on one socket"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_get_one_line() {
    for args in [&["-E", "sideways"][..], &["-g", "other"], &["-b", "lots"]] {
        let out = Command::new(BENCH)
            .args(args)
            .output()
            .expect("run coap-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("coap-bench: -"), "{args:?}: {stderr}");
    }
}

#[test]
fn command_line_mistakes_get_one_exact_line() {
    for (args, line) in [
        (&["-q"][..], "coap-bench: unknown option -q (try -h)"),
        (&["-R"], "coap-bench: option -R needs an argument (try -h)"),
        (&["-D0"], "coap-bench: -D: bad number \"0\" (try -h)"),
        (
            &["-R", "1", "stray"],
            "coap-bench: unexpected argument \"stray\" (try -h)",
        ),
    ] {
        let out = Command::new(BENCH)
            .args(args)
            .output()
            .expect("run coap-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr, format!("{line}\n"), "{args:?}");
    }
}
