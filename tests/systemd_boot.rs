//! The systemd-managed Hall, for real: a minimal Debian 12 (systemd 252) booted with
//! `systemd-nspawn -b`, the install steps of docs/operations/systemd.md run literally by an
//! ordinary user with sudo, then the socket-activated, hardened service is driven the way an
//! operator would: status as a member of `wcp`, a signed worker dispatched through it, good and
//! bad reloads, stop and re-activation, the journal.
//!
//! Needs root, `mmdebstrap` and `systemd-nspawn` (`.ci/run` installs them). The root file system
//! is built once from Debian's packages and cached by its package list
//! (`$WCP_TEST_CACHE`, default `/var/cache/wcp-hall-test`), so a rerun boots in seconds.
//! A machine that cannot build or boot the container fails this test with the reason: it is
//! never skipped.
//!
//! On this kind of VM nspawn boots only with `--register=no --keep-unit`, and its own seccomp
//! filter would refuse Landlock (`SYSTEMD_SECCOMP=0` lets it through).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// What the root file system holds beyond `minbase`.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "sudo",
    "ca-certificates",
];
const SUITE: &str = "bookworm";

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test boots a real systemd in a container and needs {tool}: apt-get install \
         {package} (.ci/run does)"
    );
}

/// The cached root file system tarball, built on first use.
fn rootfs() -> PathBuf {
    require_tool("mmdebstrap", "mmdebstrap");
    let cache = std::env::var_os("WCP_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wcp-hall-test"));
    std::fs::create_dir_all(&cache).unwrap();
    let key = Sha256::digest(format!("{SUITE} minbase {}", PACKAGES.join(",")).as_bytes());
    let tar = cache.join(format!("rootfs-{}.tar", &hex(&key)[..16]));
    if !tar.exists() {
        let partial = tar.with_extension("partial");
        eprintln!("building the Debian {SUITE} root file system once (about a minute)…");
        run(
            Command::new("mmdebstrap")
                .args(["--quiet", "--variant=minbase", "--format=tar"])
                .arg(format!("--include={}", PACKAGES.join(",")))
                .arg(SUITE)
                .arg(&partial),
            "mmdebstrap (needs Debian's package mirror)",
        );
        std::fs::rename(&partial, &tar).unwrap();
    }
    tar
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The page whose install and operator blocks this test runs.
const INSTALL_DOC: &str = "docs/operations/systemd.md";

/// The shell lines of the install page's `<!-- NAME:begin -->` … `<!-- NAME:end -->` block.
fn doc_block(name: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo(INSTALL_DOC)).unwrap();
    let start = doc
        .find(&format!("<!-- {name}:begin"))
        .unwrap_or_else(|| panic!("{INSTALL_DOC} has the {name} block"));
    let end = doc
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{INSTALL_DOC}'s {name} block ends"));
    doc[start..end]
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// The install block, as written, without the two build lines (the test builds the package on
/// the host from the binary under test, with the same script).
fn install_steps() -> String {
    let lines = doc_block("install");
    assert!(
        lines[0].starts_with("cargo install cargo-deb")
            && lines[1].starts_with("packaging/build-deb"),
        "the install block starts with the package build: {lines:?}"
    );
    lines[2..].join("\n") + "\n"
}

/// `packaging/build-deb --dev`: the Debian package of the binary under test.
fn build_deb(into: &Path) {
    require_tool("cargo-deb", "cargo-deb (cargo install cargo-deb --locked)");
    let out = run(
        Command::new(repo("packaging/build-deb")).arg("--dev"),
        "packaging/build-deb --dev",
    );
    let deb = out
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("build-deb printed no package: {out}"));
    std::fs::create_dir_all(into).unwrap();
    let name = Path::new(deb).file_name().unwrap();
    std::fs::copy(deb, into.join(name)).unwrap();
    let lint = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(deb)
        .output()
        .expect("lintian (apt-get install lintian; .ci/run does)");
    assert!(
        lint.status.success(),
        "lintian finds errors in {deb}:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// What runs inside the booted container, as root, after `multi-user.target`. Each check
/// writes `name=value` to /out/result.txt; the host asserts them.
const CHECKS: &str = r#"#!/bin/bash
exec >/out/log.txt 2>&1
set -x
r() { echo "$1=$2" >> /out/result.txt; }
echo "127.0.1.1 $(hostname)" >> /etc/hosts
useradd -m -s /bin/bash alice
echo 'alice ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/alice
chown -R alice:alice /src

# The documented install steps, as alice.
su - alice -c 'cd /src && set -e && . ./install.sh' > /out/install.txt 2>&1
r install $?
r socket_active "$(systemctl is-active wcp-hall.socket)"
r service_before "$(systemctl is-active wcp-hall.service)"
r socket_owner "$(stat -c %U:%G:%a /run/wcp-hall/hall.sock)"
# init would make a second Hall in the package's state directory: refused with a hint.
wcp-hall init --namespace org.acme > /out/init.txt 2>&1
r init_beside_package $?

# A new login of alice (a member of wcp now) asks for the status: socket activation.
su - alice -c 'wcp-hall status -s /run/wcp-hall/hall.sock' > /out/status.txt 2>&1
r status $?
r service_after "$(systemctl is-active wcp-hall.service)"

# The documented path to a running worker (sign, enroll, trust, attestation on, reload, dispatch),
# as alice; then the same dispatch once more with --json for the report.
su - alice -c 'cd /src && . ./enroll.sh' > /out/enroll.txt 2>&1
r enroll $?
r record_mode "$(stat -c %a /etc/wcp-hall/registry/org.wcp-hall.hello.1.json)"
# alice is a member of wcp only through the group database: [identity] maps the group.
r tenant_by_group "$(grep -c 'may act as acme-corp' /out/enroll.txt)"
systemctl reload wcp-hall.service
r reload_good $?
su - alice -c 'wcp-hall --json dispatch -s /run/wcp-hall/hall.sock --capability cap.hello.greet --tenant-id acme-corp --input "{\"name\": \"Ada\"}"' > /out/dispatch.json 2>/out/dispatch.err
r dispatch $?

# Warm workers under the hardened unit: keep hello warm, reload, one dispatch teaches the pool
# its key, the next is served by an instance started ahead of it.
printf '\n[warm]\nworkers = ["wrk.hello.greeter"]\nper_worker = 1\n' >> /etc/wcp-hall/hall.toml
systemctl reload wcp-hall.service
r reload_warm $?
su - alice -c 'wcp-hall --json dispatch -s /run/wcp-hall/hall.sock --capability cap.hello.greet --tenant-id acme-corp --input "{\"name\": \"Ada\"}"' > /dev/null 2>&1
sleep 3
su - alice -c 'wcp-hall --json dispatch -s /run/wcp-hall/hall.sock --capability cap.hello.greet --tenant-id acme-corp --input "{\"name\": \"Ada\"}"' > /out/warm.json 2>/out/warm.err
r warm_dispatch $?

# A bad configuration: systemctl reload fails, the Hall keeps serving the old one.
cp /etc/wcp-hall/rules.json /tmp/rules.json
echo '{"rules": [' > /etc/wcp-hall/rules.json
systemctl reload wcp-hall.service
r reload_bad $?
r service_after_bad "$(systemctl is-active wcp-hall.service)"
cp /tmp/rules.json /etc/wcp-hall/rules.json

# The watchdog is armed.
r watchdog "$(systemctl show -p WatchdogUSec --value wcp-hall.service)"

# Stop: exit 0, the socket stays, the next connection starts the Hall again.
systemctl stop wcp-hall.service
r stop $?
r service_stopped "$(systemctl is-active wcp-hall.service)"
r socket_after_stop "$(systemctl is-active wcp-hall.socket)"
r socket_file_after_stop "$(test -S /run/wcp-hall/hall.sock && echo yes || echo no)"
su - alice -c 'wcp-hall status -s /run/wcp-hall/hall.sock' >> /out/status.txt 2>&1
r status_again $?
r service_again "$(systemctl is-active wcp-hall.service)"

# The journal: structured fields, no colour codes.
journalctl -u wcp-hall.service -o json --no-pager > /out/journal.json
r journal_ansi "$(journalctl -u wcp-hall.service -o cat --no-pager | grep -c $'\x1b\[')"
r journal_identifier "$(journalctl -u wcp-hall.service -o json --no-pager | grep -c '"SYSLOG_IDENTIFIER":"wcp-hall"')"
r man "$(test -e /usr/share/man/man1/wcp-hall-serve.1.gz && echo yes || echo no)"

# Upgrade (a reinstall runs the same maintainer scripts): the key is kept, the Hall restarts
# cleanly and serves.
key_before="$(sha256sum /etc/wcp-hall/keys/receipts.key)"
su - alice -c 'wcp-hall status -s /run/wcp-hall/hall.sock' >/dev/null 2>&1
(cd /src && apt-get install -y --reinstall ./target/debian/wcp-hall_*.deb) > /out/upgrade.txt 2>&1
r upgrade $?
r upgrade_key "$(test "$key_before" = "$(sha256sum /etc/wcp-hall/keys/receipts.key)" && echo kept || echo changed)"
su - alice -c 'wcp-hall status -s /run/wcp-hall/hall.sock' >> /out/status.txt 2>&1
r status_after_upgrade $?

# Purge: the package goes, the evidence and the keys stay.
apt-get purge -y wcp-hall > /out/purge.txt 2>&1
r purge $?
r purged_binary "$(test -e /usr/bin/wcp-hall && echo present || echo gone)"
r kept_state "$(test -d /var/lib/wcp-hall/receipts && echo kept || echo gone)"
r kept_key "$(test -e /etc/wcp-hall/keys/receipts.key && echo kept || echo gone)"
systemctl poweroff
"#;

const CHECKS_UNIT: &str = "[Unit]
Description=wcp-hall boot checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/bin/wcp-boot-checks
";

#[test]
fn the_documented_install_runs_a_worker_under_a_real_systemd() {
    require_tool("systemd-nspawn", "systemd-container");
    assert!(
        nix::unistd::geteuid().is_root(),
        "booting a container needs root (CI runs as root)"
    );
    let tar = rootfs();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-xf")
            .arg(&tar),
        "unpacking the root file system",
    );
    // The source tree the documented steps run in, with the package already built.
    let src = root.join("src");
    build_deb(&src.join("target/debian"));
    std::fs::write(src.join("install.sh"), install_steps()).unwrap();
    std::fs::write(
        src.join("enroll.sh"),
        format!("set -e\n{}\n", doc_block("operator").join("\n")),
    )
    .unwrap();
    let checks = root.join("usr/local/bin/wcp-boot-checks");
    std::fs::write(&checks, CHECKS).unwrap();
    run(
        Command::new("chmod").arg("755").arg(&checks),
        "chmod the checks",
    );
    let units = root.join("etc/systemd/system");
    std::fs::write(units.join("wcp-boot-checks.service"), CHECKS_UNIT).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/wcp-boot-checks.service",
        units.join("multi-user.target.wants/wcp-boot-checks.service"),
    )
    .unwrap();

    let boot = Command::new("timeout")
        .arg("300")
        .arg("systemd-nspawn")
        .args(["--quiet", "--boot", "--register=no", "--keep-unit"])
        .arg("--private-network")
        .arg("--directory")
        .arg(&root)
        .arg(format!("--bind={}:/out", out.display()))
        .env("SYSTEMD_SECCOMP", "0")
        .output()
        .expect("systemd-nspawn");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let results: BTreeMap<String, String> = read("result.txt")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let context = format!(
        "nspawn: {}\nresults: {results:#?}\ninstall:\n{}\nstatus:\n{}\nenroll:\n{}\ndispatch:\n{}{}\nlog:\n{}\nconsole (tail):\n{}",
        boot.status,
        read("install.txt"),
        read("status.txt"),
        read("enroll.txt"),
        read("dispatch.json"),
        read("dispatch.err"),
        read("log.txt"),
        String::from_utf8_lossy(&boot.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        results.contains_key("journal_identifier"),
        "the container did not boot or the checks did not finish: {context}"
    );
    let is = |k: &str, v: &str| {
        assert_eq!(
            results.get(k).map(String::as_str),
            Some(v),
            "{k}: {context}"
        );
    };
    is("install", "0");
    is("socket_active", "active");
    is("service_before", "inactive");
    is("socket_owner", "root:wcp:660");
    is("init_beside_package", "2");
    assert!(read("init.txt").contains("packaged Hall"), "{context}");
    is("status", "0");
    is("service_after", "active");
    is("enroll", "0");
    is("record_mode", "644");
    is("tenant_by_group", "1");
    is("reload_good", "0");
    is("dispatch", "0");
    is("reload_warm", "0");
    is("warm_dispatch", "0");
    is("reload_bad", "1");
    is("service_after_bad", "active");
    is("watchdog", "30s");
    is("stop", "0");
    is("service_stopped", "inactive");
    is("socket_after_stop", "active");
    is("socket_file_after_stop", "yes");
    is("status_again", "0");
    is("service_again", "active");
    is("journal_ansi", "0");
    assert_ne!(results["journal_identifier"], "0", "{context}");
    is("man", "yes");
    is("upgrade", "0");
    is("upgrade_key", "kept");
    is("status_after_upgrade", "0");
    is("purge", "0");
    is("purged_binary", "gone");
    is("kept_state", "kept");
    is("kept_key", "kept");

    // The worker ran under the hardened unit, inside the envelope the report describes.
    let answer: serde_json::Value = serde_json::from_str(&read("dispatch.json"))
        .unwrap_or_else(|e| panic!("dispatch answer: {e}: {context}"));
    assert_eq!(answer["status"], "completed", "{context}");
    let report = &answer["execution"]["summary"]["envelope"];
    assert_eq!(report["landlock"]["effective"], "enforced", "{report}");
    assert_eq!(report["seccomp"]["effective"], "enforced", "{report}");
    assert_eq!(report["pid_namespace"]["effective"], "enforced", "{report}");
    assert_eq!(report["network"]["effective"], "enforced", "{report}");
    assert_eq!(report["namespaces"]["mount"], true, "{report}");
    assert_eq!(report["instance"]["kind"], "cold", "{report}");
    // A warm instance under the same unit: the same envelope, started ahead of its request.
    let warm: serde_json::Value = serde_json::from_str(&read("warm.json"))
        .unwrap_or_else(|e| panic!("warm answer: {e}: {}: {context}", read("warm.err")));
    assert_eq!(warm["status"], "completed", "{context}");
    let warm_report = &warm["execution"]["summary"]["envelope"];
    assert_eq!(warm_report["instance"]["kind"], "warm", "{warm_report}");
    for feature in ["landlock", "seccomp", "pid_namespace", "network"] {
        assert_eq!(
            warm_report[feature]["effective"], report[feature]["effective"],
            "{feature}: {warm_report}"
        );
    }
    // Structured journal fields: the target of each line.
    assert!(
        read("journal.json").contains("\"TARGET\":\"wcp_hall::hall::lifecycle\""),
        "{}",
        read("journal.json")
    );
}
