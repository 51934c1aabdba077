//! The envelope end to end: real processes, real kernel enforcement, real reports.

mod envelope_support;

use envelope_support::*;
use wcp_hall::registry::NetworkEgress;

const UID_BASE: u32 = 61000;

#[test]
fn hello_worker_reads_request_and_writes_result() {
    let fx = fixture();
    let pkg = fx.package(
        "hello",
        "import json, sys, os\nreq = json.load(sys.stdin)\nprint(json.dumps({'greeting': 'hello ' + req['name'], 'corr': os.environ['WCP_CORRELATION_ID']}))\n",
    );
    let env = fx.envelope();
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"hall"}"#,
        UID_BASE,
    );
    let out = env.run(&req).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", serde_json::to_string_pretty(&out.report).unwrap());
    assert!(out.success(), "{:?}", out.exit);
    let v = out.result_json().unwrap();
    assert_eq!(v["greeting"], "hello hall");
}
