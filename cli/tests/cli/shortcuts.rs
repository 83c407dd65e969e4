//! The family shortcuts call the API's typed routes: the operation they
//! fire is the one the route enqueues. The families are enabled in the API
//! only (no worker runs them here), so each operation stays pending and
//! can be read back as the API stored it.

use serde_json::json;

use opsqueue_tests::Cluster;

use crate::helpers::App;

fn families_on() -> App {
    let mut cluster = Cluster::new();
    for family in ["pm2", "systemd", "caddy", "proxmox"] {
        cluster.set_env(
            &format!("OPSQUEUE_{}__ENABLED", family.to_uppercase()),
            "true",
        );
    }
    cluster.set_env("OPSQUEUE_SYSTEMD__ALLOW", r#"["nginx.service"]"#);
    cluster.start_api();
    App {
        cluster,
        home: tempfile::tempdir().expect("a temp HOME"),
    }
}

/// Runs a shortcut that must be accepted; the operation the API stored.
async fn fired(app: &App, args: &[&str]) -> serde_json::Value {
    let run = app.run(args);
    run.expect_code(0);
    app.cluster.operation(&run.id()).await
}

#[tokio::test]
async fn each_shortcut_fires_the_operation_of_its_typed_route() {
    let app = families_on();

    let op = fired(&app, &["pm2", "restart", "web"]).await;
    assert_eq!(
        (op["type"].as_str(), &op["payload"]),
        (Some("pm2.restart"), &json!({"name": "web"}))
    );
    let op = fired(&app, &["pm2", "start", "web"]).await;
    assert_eq!(op["type"], "pm2.start");
    let op = fired(
        &app,
        &[
            "pm2",
            "set",
            "web",
            "instances:=4",
            "max_memory_restart=300M",
            "env:={\"LOG_LEVEL\":\"debug\"}",
        ],
    )
    .await;
    assert_eq!(op["type"], "pm2.update");
    assert_eq!(
        op["payload"],
        json!({"name": "web", "instances": 4, "max_memory_restart": "300M", "env": "***"})
    );
    let op = fired(&app, &["pm2", "delete", "web", "--target", "web-2"]).await;
    assert_eq!(
        (op["type"].as_str(), op["target"].as_str()),
        (Some("pm2.delete"), Some("web-2"))
    );

    let op = fired(&app, &["systemd", "restart", "nginx.service"]).await;
    assert_eq!(op["type"], "systemd.restart");
    assert_eq!(op["payload"]["unit"], "nginx.service");

    let op = fired(&app, &["caddy", "add", "example.com", "127.0.0.1:8090"]).await;
    assert_eq!(op["type"], "caddy.site.add");
    assert_eq!(op["payload"]["domain"], "example.com");
    assert_eq!(op["payload"]["upstream"], "127.0.0.1:8090");
    let op = fired(&app, &["caddy", "remove", "example.com"]).await;
    assert_eq!(op["type"], "caddy.site.remove");

    let node = app
        .cluster
        .post(
            "/api/v1/proxmox/nodes",
            json!({"name": "lab", "host": "127.0.0.1", "token_id": "root@pam!t", "token_secret": "s"}),
        )
        .await;
    assert_eq!(node.status.as_u16(), 201, "{:#?}", node.body);
    let node_id = node.body["id"].as_str().unwrap().to_owned();
    let op = fired(&app, &["proxmox", "start", "lab", "100"]).await;
    assert_eq!(op["type"], "proxmox.guest.start");
    assert_eq!(op["payload"]["node"], node_id.as_str());
    assert_eq!(op["payload"]["vmid"], 100);
    let op = fired(&app, &["proxmox", "reboot", &node_id, "100"]).await;
    assert_eq!(op["type"], "proxmox.guest.reboot");
    let op = fired(
        &app,
        &[
            "proxmox", "migrate", "lab", "100", "--to", "pve2", "--online",
        ],
    )
    .await;
    assert_eq!(op["type"], "proxmox.guest.migrate");
    assert_eq!(op["payload"]["target"], "pve2");
    assert_eq!(op["payload"]["online"], true);

    let unknown = app.run(&["proxmox", "start", "nowhere", "100"]);
    unknown.expect_code(4);
    assert!(
        unknown.stderr.contains("no Proxmox node named \"nowhere\""),
        "{unknown:#?}"
    );
    assert!(unknown.stderr.contains("registered: lab"), "{unknown:#?}");
}

#[test]
fn a_name_the_route_refuses_shows_its_field_error() {
    let app = families_on();
    // Encoded as one path segment: the route sees the whole name and refuses it.
    let run = app.run(&["pm2", "restart", "bad name/../x"]);
    run.expect_code(4);
    assert!(run.stderr.contains("422 invalid_request"), "{run:#?}");
    assert!(run.stderr.contains("  - name: "), "{run:#?}");

    let denied = app.run(&["systemd", "restart", "ssh.service"]);
    denied.expect_code(4);
    assert!(denied.stderr.contains("403 forbidden"), "{denied:#?}");
}
