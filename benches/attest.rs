//! Package verification speed: cold verification (hash while copying into a fresh store) of a
//! 5,000-file / 100 MiB package and of one 100 MiB file, cached re-verification, and PyHall's
//! `canonical_package_hash` (benches/pyhall_hash.py, a faithful re-implementation) on the same
//! trees in the same run.
//!
//! `cargo bench --bench attest [-- FILTER]` where FILTER is a substring of a row label
//! (e.g. `cached`). The trees are generated deterministically (xorshift64*) in a temporary
//! directory and deleted afterwards; nothing is written into the repository.
//!
//! What is timed:
//! - *hash*: `attest::hash_tree` (scan + read + SHA-256; no copy), page cache warm.
//! - *cold verify*: `verify_package` of an awp.v2 manifest (Ed25519, trust policy) with a fresh,
//!   empty store each sample: scan, hash while copying, publish the read-only entry. The source
//!   is in the page cache ("cold" means: not yet verified, not yet in the store).
//! - *cached re-verify*: `verify_package` again on an unchanged source: one read of the
//!   inotify descriptor and one stat of the root (no scan, no content read), then the manifest
//!   read, Ed25519 verification against the trust policy and the store entry check.
//! - *metadata rescan*: the stat-only scan the store falls back to without inotify and runs
//!   every 10 s anyway.
//! - *current_hash (interval)*: `AttestedWorkers::current_hash` with a recheck interval, i.e.
//!   what a routing decision pays between re-verifications.
//! - *calibration*: SHA-256 of 100 MiB already in memory on one core — the ceiling for a single
//!   large file at that moment (other processes may share the cores).
//! - *PyHall*: only the `canonical_package_hash` call inside Python (not interpreter start-up).
//!
//! Figures and their interpretation live in BENCHMARKS.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wcp_hall::attest::sign::{self, SignRequest};
use wcp_hall::attest::{
    AttestedWorkers, PackageStore, RecheckPolicy, SpeciesPackage, TreeLimits, TrustPolicy, UtcTime,
    VerifyRequest, hash_tree, verify_package,
};
use wcp_hall::crypto::KeyPair;
use wcp_hall::router::WorkerHashes;

const MIB: u64 = 1 << 20;
const SMALL_FILES: usize = 5_000;
const TOTAL: u64 = 100 * MIB;
const WID: &str = "org.bench.worker.i-1";
const SID: &str = "wrk.bench.worker";

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// 5,000 files of ~20 KiB (100 MiB in all) spread over 50 directories two levels deep.
fn make_many(root: &Path, rng: &mut XorShift) {
    let per = (TOTAL / SMALL_FILES as u64) as usize;
    let mut buf = vec![0u8; per];
    for i in 0..SMALL_FILES {
        let dir = root.join(format!("pkg{:02}/mod{:02}", i % 10, (i / 10) % 5));
        std::fs::create_dir_all(&dir).expect("mkdir");
        rng.fill(&mut buf);
        std::fs::write(dir.join(format!("file{i:04}.py")), &buf).expect("write");
    }
}

fn make_one(root: &Path, rng: &mut XorShift) {
    std::fs::create_dir_all(root).expect("mkdir");
    let mut buf = vec![0u8; TOTAL as usize];
    rng.fill(&mut buf);
    std::fs::write(root.join("model.bin"), &buf).expect("write");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1e-1 {
        format!("{:.0} ms", s * 1e3)
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn gbps(bytes: u64, d: Duration) -> String {
    format!("{:.2} GB/s", bytes as f64 / d.as_secs_f64() / 1e9)
}

struct Row {
    label: String,
    median: Duration,
    min: Duration,
    samples: usize,
    throughput: String,
    pyhall: String,
    target: String,
}

fn time_n(n: usize, mut f: impl FnMut() -> Duration) -> (Duration, Duration, usize) {
    let v: Vec<Duration> = (0..n).map(|_| f()).collect();
    let min = *v.iter().min().expect("samples");
    (median(v), min, n)
}

fn pyhall(root: &Path, repeat: usize) -> Option<(String, Duration)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pyhall_hash.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(root)
        .arg("--repeat")
        .arg(repeat.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "pyhall_hash.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["digest"].as_str()?.to_owned(),
        Duration::from_secs_f64(v["median_s"].as_f64()?),
    ))
}

struct Tree {
    name: &'static str,
    root: PathBuf,
    digest: String,
    pyhall: Option<Duration>,
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));
    let tmp = tempfile::tempdir().expect("tempdir");
    let shm = Path::new("/dev/shm");
    let shm_tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let key = KeyPair::from_seed(&[7; 32]);
    let policy_text = format!(
        r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"org.bench":{{"threshold":1,"keys":[{{"public_key":"{}"}}]}}}}}}"#,
        key.public().to_base64()
    );
    let policy = TrustPolicy::from_json_bytes(policy_text.as_bytes()).expect("policy");
    let now = UtcTime::now();

    eprintln!("generating trees in {} …", tmp.path().display());
    let mut trees = Vec::new();
    for (name, make) in [
        (
            "5,000 files / 100 MiB",
            make_many as fn(&Path, &mut XorShift),
        ),
        ("1 file / 100 MiB", make_one),
    ] {
        let root = tmp
            .path()
            .join(if name.starts_with('5') { "many" } else { "one" });
        make(&root, &mut rng);
        let (tree, _, env) = sign::sign_v2(
            &SignRequest {
                package_root: &root,
                worker_id: WID,
                worker_species_id: SID,
                worker_version: "1.0.0",
                build_source: "ci",
                built_at: now,
                expires_at: None,
                limits: TreeLimits::default(),
            },
            &[&key],
        )
        .expect("sign");
        sign::write_manifest(&root.join("manifest.sig"), &sign::envelope_text(&env))
            .expect("manifest");
        trees.push(Tree {
            name,
            root,
            digest: tree.digest,
            pyhall: None,
        });
    }
    // Fingerprints taken within the racy margin are not trusted: let the trees settle.
    std::thread::sleep(Duration::from_millis(300));

    let verify = |t: &Tree, store: &PackageStore| {
        let start = Instant::now();
        let r = verify_package(&VerifyRequest {
            package_root: &t.root,
            manifest_path: &t.root.join("manifest.sig"),
            worker_id: WID,
            worker_species_id: SID,
            trust: Some(&policy),
            hmac_key: None,
            store: Some(store),
            limits: TreeLimits::default(),
            now,
        });
        let elapsed = start.elapsed();
        assert!(r.ok, "{r:#?}");
        assert_eq!(r.package_hash.as_deref(), Some(t.digest.as_str()));
        (elapsed, r.cached)
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut leftovers: Vec<PathBuf> = Vec::new();
    // Calibration: one core's SHA-256 ceiling right now (the machine may be shared).
    if wanted("calibration") {
        let mut data = vec![0u8; TOTAL as usize];
        XorShift(1).fill(&mut data);
        let (med, min, n) = time_n(9, || {
            let s = Instant::now();
            black_box(<sha2::Sha256 as sha2::Digest>::digest(black_box(&data)));
            s.elapsed()
        });
        rows.push(Row {
            label: "calibration: SHA-256 of 100 MiB in memory, one core".into(),
            median: med,
            min,
            samples: n,
            throughput: gbps(TOTAL, med),
            pyhall: "-".into(),
            target: "-".into(),
        });
    }
    for t in &mut trees {
        let large = t.name.starts_with('1');
        // PyHall first (it also warms the page cache), checking it agrees on the digest.
        if wanted(&format!("pyhall {}", t.name)) || wanted(&format!("hash {}", t.name)) {
            match pyhall(&t.root, 5) {
                Some((digest, d)) => {
                    assert_eq!(
                        digest, t.digest,
                        "PyHall and the Hall disagree on {}",
                        t.name
                    );
                    t.pyhall = Some(d);
                }
                None => eprintln!("python3 not available: PyHall column left empty"),
            }
        }
        let py = t.pyhall.map(fmt).unwrap_or_else(|| "-".into());
        let label = format!("hash {}", t.name);
        if wanted(&label) {
            let (med, min, n) = time_n(9, || {
                let s = Instant::now();
                let d = hash_tree(&t.root, &TreeLimits::default()).expect("hash");
                let e = s.elapsed();
                assert_eq!(d.digest, t.digest);
                e
            });
            rows.push(Row {
                label,
                median: med,
                min,
                samples: n,
                throughput: gbps(TOTAL, med),
                pyhall: py.clone(),
                target: if large {
                    "≥ 1.4 GB/s".into()
                } else {
                    "-".into()
                },
            });
        }
        for (where_, base) in [
            ("ext4", Some(tmp.path())),
            ("tmpfs", shm_tmp.as_ref().map(|d| d.path())),
        ] {
            let Some(base) = base else { continue };
            let label = format!("cold verify {} (store on {where_})", t.name);
            if !wanted(&label) {
                continue;
            }
            let mut k = 0;
            let (med, min, n) = time_n(7, || {
                k += 1;
                let dir = base.join(format!("store-{}-{k}", if large { "one" } else { "many" }));
                let store = PackageStore::open(&dir).expect("store");
                let (e, cached) = verify(t, &store);
                assert!(!cached);
                // Kept until the end: deleting 5,000 inodes right before creating 5,000 more
                // makes ext4's allocator skip "recently deleted" inodes one disk block at a
                // time, which measures the benchmark, not the Hall.
                leftovers.push(dir);
                e
            });
            rows.push(Row {
                label,
                median: med,
                min,
                samples: n,
                throughput: gbps(TOTAL, med),
                pyhall: py.clone(),
                target: match (large, where_) {
                    (true, _) => "≥ 1.4 GB/s".into(),
                    (false, _) => "≤ 150 ms".into(),
                },
            });
        }
        let label = format!("metadata rescan (fallback, every 10 s) {}", t.name);
        if wanted(&label) {
            let (med, min, n) = time_n(if large { 500 } else { 30 }, || {
                let s = Instant::now();
                black_box(
                    wcp_hall::attest::tree::plan(&t.root, &TreeLimits::default()).expect("scan"),
                );
                s.elapsed()
            });
            rows.push(Row {
                label,
                median: med,
                min,
                samples: n,
                throughput: "-".into(),
                pyhall: "-".into(),
                target: "-".into(),
            });
        }
        let label = format!("cached re-verify {}", t.name);
        let label2 = format!("current_hash (interval) {}", t.name);
        if wanted(&label) || wanted(&label2) {
            let dir = tmp.path().join(format!(
                "store-cached-{}",
                if large { "one" } else { "many" }
            ));
            let store = PackageStore::open(&dir).expect("store");
            verify(t, &store);
            let iterations = if large { 2_000 } else { 50 };
            let (med, min, n) = time_n(iterations, || {
                let (e, cached) = verify(t, &store);
                assert!(
                    cached,
                    "the source settled, so re-verification must hit the cache"
                );
                e
            });
            if wanted(&label) {
                rows.push(Row {
                    label,
                    median: med,
                    min,
                    samples: n,
                    throughput: "-".into(),
                    pyhall: py.clone(),
                    target: "≤ 100 µs".into(),
                });
            }
            let mut workers = AttestedWorkers::new(Arc::new(store), Arc::new(policy.clone()), None)
                .with_recheck(RecheckPolicy::Interval(Duration::from_secs(3600)));
            workers.add(SpeciesPackage {
                worker_species_id: SID.into(),
                worker_id: WID.into(),
                package_root: t.root.clone(),
                manifest_path: t.root.join("manifest.sig"),
                registered_hash: Some(t.digest.clone()),
            });
            assert_eq!(
                workers.dispatch().current_hash(SID).as_deref(),
                Some(t.digest.as_str())
            );
            if wanted(&label2) {
                let (med, min, n) = time_n(20_000, || {
                    let s = Instant::now();
                    black_box(workers.dispatch().current_hash(black_box(SID)));
                    s.elapsed()
                });
                rows.push(Row {
                    label: label2,
                    median: med,
                    min,
                    samples: n,
                    throughput: "-".into(),
                    pyhall: "-".into(),
                    target: "≤ 100 µs".into(),
                });
            }
            drop(workers);
            let _ = remove_store(&dir);
        }
    }

    for dir in leftovers {
        let _ = remove_store(&dir);
    }
    println!();
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>7} | {:>10} | {:>12} | {:>11} | {:<6} |",
        "measurement", "median", "min", "samples", "throughput", "PyHall hash", "target", "result"
    );
    println!(
        "|{:-<54}|{:->11}|{:->11}|{:->9}|{:->12}|{:->14}|{:->13}|{:-<8}|",
        "", "", "", "", "", "", "", ""
    );
    for r in &rows {
        let verdict = if r.target.starts_with("≥") {
            let gb = TOTAL as f64 / r.median.as_secs_f64() / 1e9;
            if gb >= 1.4 { "PASS" } else { "MISS" }
        } else if let Some(limit) = r.target.strip_prefix("≤ ") {
            let limit = if let Some(ms) = limit.strip_suffix(" ms") {
                Duration::from_millis(ms.parse().unwrap_or(0))
            } else if let Some(us) = limit.strip_suffix(" µs") {
                Duration::from_micros(us.parse().unwrap_or(0))
            } else {
                Duration::ZERO
            };
            if r.median <= limit { "PASS" } else { "MISS" }
        } else {
            "-"
        };
        println!(
            "| {:<52} | {:>9} | {:>9} | {:>7} | {:>10} | {:>12} | {:>11} | {:<6} |",
            r.label,
            fmt(r.median),
            fmt(r.min),
            r.samples,
            r.throughput,
            r.pyhall,
            r.target,
            verdict
        );
    }
    println!();
    println!(
        "machine: {} threads available; hashing threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        wcp_hall::attest::tree::default_threads()
    );
}

/// Removes a store directory (entries are read-only).
fn remove_store(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn unlock(p: &Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(p)?.is_dir() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
            for e in std::fs::read_dir(p)? {
                unlock(&e?.path())?;
            }
        }
        Ok(())
    }
    unlock(dir)?;
    std::fs::remove_dir_all(dir)
}
