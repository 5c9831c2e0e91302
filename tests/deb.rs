//! The amd64 Debian package (scripts/build-deb): control fields, conffiles and maintainer
//! scripts, the files it carries (the binary runs, the unit passes `systemd-analyze verify`,
//! examples, completions, man pages), and dpkg installing, reinstalling over an edited
//! conffile, removing and purging it in a throwaway root: nothing touches the real system.
//!
//! The package comes from `EDGECAM_DEB` (`scripts/test --with-deb` builds it once with
//! `scripts/build-deb` and sets it). Without it these tests are skipped, unless
//! `EDGECAM_REQUIRE_DEB=1` (CI), where they fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The package, or `None` after printing why the test is skipped. Panics instead when
/// `EDGECAM_REQUIRE_DEB=1`, or when `EDGECAM_DEB` names no file.
fn deb_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("EDGECAM_DEB") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "{test}: EDGECAM_DEB={} is not a file",
                p.display()
            );
            Some(p)
        }
        None if std::env::var("EDGECAM_REQUIRE_DEB").as_deref() == Ok("1") => panic!(
            "{test}: EDGECAM_REQUIRE_DEB=1 but EDGECAM_DEB is not set (scripts/test --with-deb \
             builds the package and sets it; or EDGECAM_DEB=$(scripts/build-deb | tail -1))"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: EDGECAM_DEB not set; run scripts/test --with-deb, or set \
                 EDGECAM_DEB=$(scripts/build-deb | tail -1)"
            );
            None
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn field(deb: &Path, name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_string()
}

#[test]
fn control_fields_name_the_package_arch_and_dependencies() {
    let Some(deb) = deb_or_skip("control_fields_name_the_package_arch_and_dependencies") else {
        return;
    };
    assert_eq!(field(&deb, "Package"), "edgecam");
    assert_eq!(field(&deb, "Architecture"), "amd64");
    let version = field(&deb, "Version");
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "Version {version}"
    );
    // What `readelf -d` of the binary says it needs.
    let depends = field(&deb, "Depends");
    let names: Vec<&str> = depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    for want in ["libc6", "libssl3", "systemd"] {
        assert!(names.contains(&want), "Depends lacks {want}: {depends}");
    }
}

#[test]
fn conffiles_and_maintainer_scripts() {
    let Some(deb) = deb_or_skip("conffiles_and_maintainer_scripts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(dir.path()));
    let conffiles = std::fs::read_to_string(dir.path().join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/edgecam/example.toml"],
        "{conffiles}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let p = dir.path().join(script);
        let shipped = std::fs::read(&p).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert_eq!(
            shipped,
            std::fs::read(Path::new(ROOT).join("packaging/deb").join(script)).unwrap(),
            "{script} is not packaging/deb/{script}"
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755,
            "{script}"
        );
        run(Command::new("sh").arg("-n").arg(&p));
    }
}

/// The package's files, extracted with `dpkg-deb -x`.
fn extract(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
    dir
}

#[test]
fn contents_binary_unit_sysusers_examples() {
    let Some(deb) = deb_or_skip("contents_binary_unit_sysusers_examples") else {
        return;
    };
    let dir = extract(&deb);
    let root = dir.path();

    let bin = root.join("usr/bin/edgecam");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = stdout(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("edgecam {}", env!("CARGO_PKG_VERSION"))
    );

    // The unit: the repository's, starting the packaged binary.
    let unit_path = root.join("usr/lib/systemd/system/edgecam@.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let source = std::fs::read_to_string(Path::new(ROOT).join("systemd/edgecam@.service")).unwrap();
    assert_eq!(
        unit,
        source.replace("/usr/local/bin/edgecam", "/usr/bin/edgecam")
    );
    assert!(unit.contains("ExecStart=/usr/bin/edgecam run --config /etc/edgecam/%i.toml"));
    assert!(!unit.contains("/usr/local"), "{unit}");
    // systemd-analyze verify needs the executable to exist: the extracted one stands in.
    let instance = root.join("edgecam@front-door.service");
    std::fs::write(
        &instance,
        unit.replace("/usr/bin/edgecam", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
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

    assert_eq!(
        std::fs::read(root.join("usr/lib/sysusers.d/edgecam.conf")).unwrap(),
        std::fs::read(Path::new(ROOT).join("systemd/edgecam.sysusers")).unwrap()
    );
    for (shipped, source) in [
        ("etc/edgecam/example.toml", "edgecam.example.toml"),
        (
            "usr/share/doc/edgecam/examples/edgecam.example.toml",
            "edgecam.example.toml",
        ),
        (
            "usr/share/doc/edgecam/examples/csi-camera.toml",
            "csi-camera.toml",
        ),
        (
            "usr/share/doc/edgecam/examples/usb-webcam.toml",
            "usb-webcam.toml",
        ),
        (
            "usr/share/doc/edgecam/examples/bridge.example.toml",
            "bridge.example.toml",
        ),
    ] {
        assert_eq!(
            std::fs::read(root.join(shipped)).unwrap_or_else(|e| panic!("{shipped}: {e}")),
            std::fs::read(Path::new(ROOT).join("config").join(source)).unwrap(),
            "{shipped}"
        );
    }
    assert!(root.join("usr/share/doc/edgecam/copyright").is_file());

    // Debian policy: nothing in /usr/local.
    assert!(!root.join("usr/local").exists());
}

/// The subcommands a user sees in `edgecam --help`.
const COMMANDS: [&str; 7] = [
    "run",
    "bridge",
    "check-config",
    "consume",
    "process",
    "view",
    "demo",
];

#[test]
fn completions_and_man_pages() {
    let Some(deb) = deb_or_skip("completions_and_man_pages") else {
        return;
    };
    let dir = extract(&deb);
    let root = dir.path();
    for (path, defines) in [
        (
            "usr/share/bash-completion/completions/edgecam",
            "complete -F",
        ),
        (
            "usr/share/zsh/vendor-completions/_edgecam",
            "#compdef edgecam",
        ),
        (
            "usr/share/fish/vendor_completions.d/edgecam.fish",
            "complete -c edgecam",
        ),
    ] {
        let script =
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(script.contains(defines), "{path} lacks {defines:?}");
        for command in COMMANDS {
            assert!(script.contains(command), "{path} does not name {command}");
        }
        for option in ["--config", "--log-format", "--bootstrap-servers"] {
            let bare = option.trim_start_matches('-');
            assert!(script.contains(bare), "{path} does not name {option}");
        }
        // The packaging helpers are not part of the interface.
        assert!(
            !script.contains("completions") && !script.contains("out-dir"),
            "{path} offers the packaging helpers"
        );
    }
    bash_completes_the_commands(&root.join("usr/share/bash-completion/completions/edgecam"));

    let man = root.join("usr/share/man/man1");
    let page = |name: &str| -> String {
        let p = man.join(format!("{name}.1.gz"));
        // roff writes "-" as "\-".
        stdout(Command::new("gzip").arg("-dc").arg(&p)).replace("\\-", "-")
    };
    let main = page("edgecam");
    assert!(
        main.contains(&format!(
            ".TH edgecam 1  \"edgecam {}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        &main[..main.len().min(400)]
    );
    for command in COMMANDS {
        assert!(main.contains(command), "edgecam.1 does not name {command}");
        let sub = page(&format!("edgecam-{command}"));
        assert!(
            sub.contains(&format!(".TH edgecam-{command} 1")),
            "edgecam-{command}.1: {}",
            &sub[..sub.len().min(300)]
        );
    }
    assert!(page("edgecam-run").contains("config"));
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(pages.len(), COMMANDS.len() + 1, "{pages:?}");
}

/// Sources the bash completion and asks it, as bash would on <TAB>, for `edgecam ch` and
/// `edgecam run --c`.
fn bash_completes_the_commands(script: &Path) {
    let probe = format!(
        r#"source {}
COMP_WORDS=(edgecam ch); COMP_CWORD=1; _edgecam edgecam ch edgecam; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(edgecam run --c); COMP_CWORD=2; _edgecam edgecam --c run; echo "${{COMPREPLY[*]}}""#,
        script.display()
    );
    let out = stdout(Command::new("bash").arg("-c").arg(probe));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["check-config", "--config"], "{out}");
}

/// A root with what dpkg and systemd-sysusers need: an empty dpkg database, passwd and group.
fn throwaway_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nvideo:x:44:\n").unwrap();
    dir
}

/// dpkg on `root` only: its database, its log, maintainer scripts run with
/// `DPKG_ROOT=root` (no chroot: the root has no shell), dependencies not checked (the root
/// has no libc6 package).
fn dpkg(root: &Path, args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .args([
            "--force-not-root",
            "--force-depends",
            "--force-script-chrootless",
        ])
        .args(args))
}

#[test]
fn dpkg_installs_keeps_the_admins_files_and_purges_into_a_throwaway_root() {
    let Some(deb) =
        deb_or_skip("dpkg_installs_keeps_the_admins_files_and_purges_into_a_throwaway_root")
    else {
        return;
    };
    let dir = throwaway_root();
    let root = dir.path();
    let install = || dpkg(root, &["-i".as_ref(), deb.as_os_str()]);

    install();
    let bin = root.join("usr/bin/edgecam");
    assert!(bin.is_file());
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains("Package: edgecam\nStatus: install ok installed"),
        "{status}"
    );
    assert!(status.contains("/etc/edgecam/example.toml "), "{status}");
    // postinst ran systemd-sysusers in the root.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("edgecam:") && l.contains(":/var/lib/edgecam:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("video:") && l.contains("edgecam")),
        "{group}"
    );

    // The admin edits the conffile, adds a camera, and the service has spooled frames.
    let example = root.join("etc/edgecam/example.toml");
    std::fs::write(&example, "# mine\n").unwrap();
    let device = root.join("etc/edgecam/front-door.toml");
    std::fs::copy(
        root.join("usr/share/doc/edgecam/examples/csi-camera.toml"),
        &device,
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/lib/edgecam/spool")).unwrap();
    std::fs::write(root.join("var/lib/edgecam/spool/00000001.seg"), b"frames").unwrap();
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/edgecam@.service",
        wants.join("edgecam@front-door.service"),
    )
    .unwrap();

    // Installed again (what an upgrade does to an unchanged conffile): nothing of the
    // admin's is overwritten, the user is not duplicated.
    std::fs::remove_file(&bin).unwrap();
    install();
    assert!(bin.is_file(), "reinstalled");
    assert_eq!(std::fs::read_to_string(&example).unwrap(), "# mine\n");
    assert!(device.is_file());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("edgecam:")).count(),
        1
    );

    // Removed: the binary goes, configuration and state stay.
    dpkg(root, &["-r".as_ref(), "edgecam".as_ref()]);
    assert!(!bin.exists());
    assert!(!root
        .join("usr/lib/systemd/system/edgecam@.service")
        .exists());
    assert_eq!(std::fs::read_to_string(&example).unwrap(), "# mine\n");
    assert!(device.is_file());
    assert!(root.join("var/lib/edgecam/spool/00000001.seg").is_file());

    // Purged: the conffile, the state directory and the enablement links go; the admin's
    // own file and the user stay.
    dpkg(root, &["-P".as_ref(), "edgecam".as_ref()]);
    assert!(!example.exists());
    assert!(device.is_file(), "the admin's file is not the package's");
    assert!(!root.join("var/lib/edgecam").exists());
    assert!(std::fs::symlink_metadata(wants.join("edgecam@front-door.service")).is_err());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("edgecam:")));
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: edgecam"), "{status}");
}

/// The packaging helpers build-deb runs (no package needed): bad input is refused clearly.
#[test]
fn packaging_helpers_refuse_bad_input() {
    let bin = env!("CARGO_BIN_EXE_edgecam");
    let out = Command::new(bin)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'tcsh'") && stderr.contains("bash") && stderr.contains("fish"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(bin)
        .args(["man", "--out-dir"])
        .arg(file.join("man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write man pages into") && stderr.contains("a-file/man"),
        "{stderr}"
    );
}
