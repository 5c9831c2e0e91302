//! Deployment artefacts: the systemd unit (verify, security exposure) and scripts/install
//! into a temporary root.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_edgecam");

/// The unit as an instance, with ExecStart pointing at the binary just built.
fn instance_unit(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/edgecam@.service")).unwrap();
    let p = dir.join("edgecam@front-door.service");
    std::fs::write(&p, unit.replace("/usr/local/bin/edgecam", BIN)).unwrap();
    p
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = instance_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("edgecam@front-door.service:"),
        "warnings about the unit: {text}"
    );
}

#[test]
fn unit_security_exposure_is_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let unit = instance_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in {text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"));
    assert!(level <= 2.0, "{line}");
}

#[test]
fn unit_keeps_the_operational_contract() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/edgecam@.service")).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/local/bin/edgecam check-config --config /etc/edgecam/%i.toml",
        "ExecStart=/usr/local/bin/edgecam run --config /etc/edgecam/%i.toml",
        "RestartPreventExitStatus=64",
        "Restart=on-failure",
        "DeviceAllow=char-video4linux rw",
        "SupplementaryGroups=video",
        "StateDirectory=edgecam",
        "ProtectSystem=strict",
        "MemoryMax=",
    ] {
        assert!(unit.contains(needle), "missing {needle}");
    }
    assert!(
        !unit.contains("PrivateDevices=yes"),
        "would hide /dev/video*"
    );
}

fn install(root: &Path, extra: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/install"))
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn install_into_a_root_is_complete_idempotent_and_reversible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nvideo:x:44:\n").unwrap();

    let out = install(root, &["--binary", BIN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("systemctl enable --now edgecam@"));
    let bin = root.join("usr/local/bin/edgecam");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    for f in [
        "etc/systemd/system/edgecam@.service",
        "usr/lib/sysusers.d/edgecam.conf",
        "etc/edgecam/example.toml",
        "etc/edgecam/csi-camera.toml.example",
        "etc/edgecam/usb-webcam.toml.example",
        "etc/edgecam/bridge.toml.example",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    // The closing hint names files that exist.
    let hint = String::from_utf8_lossy(&out.stdout).to_string();
    for word in hint.split_whitespace() {
        let word = word.trim_end_matches(|c: char| !c.is_alphanumeric());
        if word.starts_with("/etc/edgecam/") && word.contains("example") {
            assert!(
                root.join(word.trim_start_matches('/')).is_file(),
                "the hint names {word}, which was not installed"
            );
        }
    }
    // Every installed example passes check-config where it was installed, as a user would
    // use it (copied to NAME.toml). rpicam-vid is part of Raspberry Pi OS; here a stand-in
    // on PATH plays it.
    let fake_bin = dir.path().join("fake-bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    std::fs::write(fake_bin.join("rpicam-vid"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        fake_bin.join("rpicam-vid"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (example, kind) in [
        ("example.toml", "valid agent configuration"),
        ("csi-camera.toml.example", "valid agent configuration"),
        ("usb-webcam.toml.example", "valid agent configuration"),
        ("bridge.toml.example", "valid bridge configuration"),
    ] {
        let etc = root.join("etc/edgecam");
        let copy = etc.join(format!("copy-of-{}", example.trim_end_matches(".example")));
        std::fs::copy(etc.join(example), &copy).unwrap();
        let out = std::process::Command::new(root.join("usr/local/bin/edgecam"))
            .args(["check-config", "--config"])
            .arg(&copy)
            .current_dir("/")
            .env("PATH", &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}: {stderr}");
        assert!(stderr.contains(kind), "{example}: {stderr}");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("edgecam:")),
        "{passwd}"
    );
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("video:") && l.contains("edgecam")),
        "{group}"
    );

    // Again: nothing duplicated, the user's edits to configs kept.
    std::fs::write(root.join("etc/edgecam/example.toml"), "# mine\n").unwrap();
    assert!(install(root, &["--binary", BIN]).status.success());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("edgecam:")).count(),
        1
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/edgecam/example.toml")).unwrap(),
        "# mine\n"
    );

    let out = install(root, &["--uninstall"]);
    assert!(out.status.success());
    assert!(!bin.exists());
    assert!(!root.join("etc/systemd/system/edgecam@.service").exists());
    assert!(!root.join("usr/lib/sysusers.d/edgecam.conf").exists());
    assert!(
        root.join("etc/edgecam/example.toml").exists(),
        "configs are kept"
    );
}

#[test]
fn install_without_a_binary_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = install(dir.path(), &["--binary", "/nonexistent/edgecam"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no edgecam binary"));
}
