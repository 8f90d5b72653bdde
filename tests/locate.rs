//! `client locate KEY` on real processes: a key's replicas in ring order, primary first, with
//! the version each holds; a replica that does not answer is shown with why, the others still.

mod common;

use common::TestCluster;

#[test]
fn locate_shows_the_replicas_in_ring_order_with_the_version_each_holds() {
    let mut cluster = TestCluster::start(4);
    let written = cluster.client(&["--json", "setr", "fruit", "apple"]).json();
    let version = written["version"].as_u64().expect("setr's version");
    let placed: Vec<String> = written["replicas"]
        .as_array()
        .expect("setr's replicas")
        .iter()
        .map(|r| r.as_str().expect("an address").to_string())
        .collect();

    let located = cluster.client(&["--json", "locate", "fruit"]).json();
    let replicas = located["replicas"].as_array().expect("replicas");
    let addrs: Vec<&str> = replicas
        .iter()
        .map(|r| r["addr"].as_str().expect("addr"))
        .collect();
    assert_eq!(
        addrs, placed,
        "the replicas setr wrote, in its order: {located}"
    );
    for replica in replicas {
        assert_eq!(replica["version"], version, "{located}");
        assert_eq!(replica["epoch"], located["epoch"], "{located}");
    }

    // A key nobody wrote has the same kind of place, and no copy anywhere.
    let missing = cluster
        .client(&["--json", "locate", "nobody-wrote-this"])
        .json();
    let replicas = missing["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3, "{missing}");
    assert!(replicas.iter().all(|r| r["version"].is_null()), "{missing}");

    // The primary dies: until the view leader expires it, locate names it with its error and
    // still shows what the other two hold.
    let primary = (0..4)
        .find(|&n| cluster.server_addr(n) == placed[0])
        .expect("the primary is one of the servers");
    cluster.kill_server(primary);
    let located = cluster.client(&["--json", "locate", "fruit"]).json();
    let replicas = located["replicas"].as_array().expect("replicas");
    let dead: Vec<&serde_json::Value> = replicas
        .iter()
        .filter(|r| r["addr"] == placed[0].as_str())
        .collect();
    let alive: Vec<&serde_json::Value> = replicas
        .iter()
        .filter(|r| r["addr"] != placed[0].as_str())
        .collect();
    if let Some(dead) = dead.first() {
        assert!(dead["error"].is_string(), "{located}");
    }
    assert!(
        alive.iter().filter(|r| r["version"] == version).count() >= 2,
        "the two live replicas still hold version {version}: {located}"
    );

    let text = cluster.client(&["locate", "fruit"]);
    text.expect_ok();
    assert!(
        text.stdout.contains("\"fruit\" at epoch") && text.stdout.contains("primary first"),
        "{text:?}"
    );
}
