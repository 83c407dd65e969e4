//! The family's built-in workflows, built in code from a route's request:
//! create, upgrade and delete a service. Each is a graph of `pocketbase.*`,
//! `systemd.*` and `caddy.*` steps, every change with the step that undoes
//! it; the API parses, checks and stores it exactly as a workflow sent to
//! `POST /api/v1/workflows`.
//!
//! - **create**: check → home (user, directory, pb_data 0750; undone by
//!   home.remove) → binary → superuser (when credentials are given) → unit
//!   (rendered, verified, written, enabled; undone by unit.remove) → start →
//!   health → site (with a domain; undone by site.remove) → verify → observe.
//!   A failure at any step undoes the completed ones in reverse: nothing is
//!   left behind.
//! - **upgrade**: stop (undone by a start) → backup of pb_data and the
//!   binary (undone by restore: old binary, old data, old version) → binary
//!   → start (undone by a stop) → health → observe. A new version that does
//!   not answer its health check is rolled back to the old one.
//! - **delete**: unit.remove → site.remove (with a domain) → home.remove
//!   (pb_data kept in the trash unless `keep_data=false`). Nothing is
//!   undone: a failed delete stops, and a retry of the workflow finishes it
//!   (every step is safe to run again).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::actions::ServiceSpec;
use super::config::PocketbaseConfig;
use super::names::{ServiceName, ServicePaths, Version};
use crate::families::route::{FieldRefusal, Plan, PlanStep, WorkflowInput};

/// Seconds between an exit and the automatic restart: slow enough that a
/// service failing at start does not reach systemd's start limit (5 in
/// 10 s) before its health check gives up and the workflow stops it.
const RESTART_SEC: u32 = 3;

/// The request's fields as `T`, a refusal naming the field at fault.
fn fields<T: DeserializeOwned>(fields: &Map<String, Value>) -> Result<T, Vec<FieldRefusal>> {
    serde_path_to_error::deserialize(Value::Object(fields.clone())).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".into() } else { path };
        vec![FieldRefusal::new(field, e.into_inner().to_string())]
    })
}

fn section(input: &WorkflowInput) -> Result<PocketbaseConfig, Vec<FieldRefusal>> {
    serde_json::from_value(input.section.clone()).map_err(|e| {
        vec![FieldRefusal::new(
            "configuration",
            format!("[pocketbase]: {e}"),
        )]
    })
}

/// The record of the service a route acts on (its `subject`).
fn record(input: &WorkflowInput) -> Result<Record, Vec<FieldRefusal>> {
    let subject = input
        .subject
        .ok_or_else(|| vec![FieldRefusal::new("name", "no such service")])?;
    serde_json::from_value(subject.clone()).map_err(|e| {
        vec![FieldRefusal::new(
            "name",
            format!("its record does not read: {e}"),
        )]
    })
}

/// What a service's record (its managed spec) holds that the workflows use.
#[derive(Debug, serde::Deserialize)]
struct Record {
    name: ServiceName,
    port: crate::names::Port,
    domain: Option<crate::names::Domain>,
}

/// The install spec of a service's unit (`systemd.unit.install`).
fn unit_spec(config: &PocketbaseConfig, spec: &ServiceSpec) -> Value {
    let paths = ServicePaths::new(&config.base_dir, &spec.name);
    let description = spec.description.as_ref().map_or_else(
        || format!("PocketBase {}", spec.name),
        |d| d.as_str().to_owned(),
    );
    let mut unit = json!({
        "unit": spec.name.unit(),
        "description": description,
        "exec_start": [
            paths.binary,
            "serve",
            format!("--http=127.0.0.1:{}", spec.port),
            format!("--dir={}", paths.data.display()),
        ],
        "working_directory": paths.data,
        "environment_file": paths.env_file,
        "read_write_paths": [paths.data],
        "restart": "always",
        "restart_sec": RESTART_SEC,
        "hardening": config.hardening,
        "enable": true,
    });
    if config.run_as_user {
        unit["user"] = json!(spec.name.user());
        unit["group"] = json!(spec.name.user());
    }
    unit
}

/// `POST /api/v1/pocketbase/services`.
pub fn create(input: &WorkflowInput) -> Result<Plan, Vec<FieldRefusal>> {
    let spec: ServiceSpec = fields(input.fields)?;
    spec.check()
        .map_err(|(field, message)| vec![FieldRefusal::new(field, message)])?;
    let config = section(input)?;
    let name = json!(spec.name);
    let unit = json!({"unit": spec.name.unit()});
    let mut home = spec.clone();
    home.superuser_email = None;
    home.superuser_password = None;
    let mut check = spec.clone();
    check.superuser_email = None;
    check.superuser_password = None;
    check.env.clear();

    let mut steps = vec![
        PlanStep::new("check", "pocketbase.check", json!(check)),
        PlanStep::new("home", "pocketbase.home.create", json!(home))
            .after("check")
            .undo("pocketbase.home.remove", json!({"name": name})),
        PlanStep::new(
            "binary",
            "pocketbase.binary.install",
            json!({"name": name, "version": spec.version}),
        )
        .after("home"),
    ];
    let mut last = "binary";
    if let (Some(email), Some(password)) = (&spec.superuser_email, &spec.superuser_password) {
        steps.push(
            PlanStep::new(
                "superuser",
                "pocketbase.superuser.upsert",
                json!({"name": name, "email": email, "password": password}),
            )
            .after(last),
        );
        last = "superuser";
    }
    steps.push(
        PlanStep::new("unit", "systemd.unit.install", unit_spec(&config, &spec))
            .after(last)
            .undo("systemd.unit.remove", unit.clone()),
    );
    steps.push(PlanStep::new("start", "systemd.start", unit).after("unit"));
    let mut health = PlanStep::new(
        "health",
        "pocketbase.health",
        json!({"name": name, "port": spec.port}),
    )
    .after("start");
    health.timeout_secs = Some(config.health_timeout_secs as i64 + 60);
    steps.push(health);
    last = "health";
    if let Some(domain) = &spec.domain {
        let site = json!({"domain": domain});
        steps.push(
            PlanStep::new(
                "site",
                "caddy.site.add",
                json!({"domain": domain, "upstream": format!("127.0.0.1:{}", spec.port)}),
            )
            .after("health")
            .undo("caddy.site.remove", site),
        );
        let mut verify = PlanStep::new(
            "verify",
            "pocketbase.verify",
            json!({"name": name, "domain": domain}),
        )
        .after("site");
        verify.timeout_secs = Some(config.health_timeout_secs as i64 + 60);
        steps.push(verify);
        last = "verify";
    }
    steps.push(PlanStep::new("observe", "pocketbase.status", json!({"name": name})).after(last));
    Ok(Plan {
        name: format!("pocketbase-create-{}", spec.name),
        compensate: true,
        steps,
    })
}

/// `PUT /api/v1/pocketbase/services/{name}` `{version}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Upgrade {
    name: ServiceName,
    #[serde(alias = "pocketbase_version")]
    version: Version,
}

pub fn upgrade(input: &WorkflowInput) -> Result<Plan, Vec<FieldRefusal>> {
    let request: Upgrade = fields(input.fields)?;
    let record = record(input)?;
    let config = section(input)?;
    let name = json!(record.name);
    let unit = json!({"unit": record.name.unit()});
    let mut health = PlanStep::new(
        "health",
        "pocketbase.health",
        json!({"name": name, "port": record.port}),
    )
    .after("start");
    health.timeout_secs = Some(config.health_timeout_secs as i64 + 60);
    let steps = vec![
        PlanStep::new("stop", "systemd.stop", unit.clone()).undo("systemd.start", unit.clone()),
        PlanStep::new("backup", "pocketbase.backup", json!({"name": name}))
            .after("stop")
            .undo("pocketbase.restore", json!({"name": name})),
        PlanStep::new(
            "binary",
            "pocketbase.binary.install",
            json!({"name": name, "version": request.version}),
        )
        .after("backup"),
        PlanStep::new("start", "systemd.start", unit.clone())
            .after("binary")
            .undo("systemd.stop", unit),
        health,
        PlanStep::new("observe", "pocketbase.status", json!({"name": name})).after("health"),
    ];
    Ok(Plan {
        name: format!("pocketbase-upgrade-{}", request.name),
        compensate: true,
        steps,
    })
}

/// `DELETE /api/v1/pocketbase/services/{name}?keep_data=`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: ServiceName,
    keep_data: Option<bool>,
}

pub fn delete(input: &WorkflowInput) -> Result<Plan, Vec<FieldRefusal>> {
    let request: Delete = fields(input.fields)?;
    let record = record(input)?;
    let name = json!(request.name);
    let mut steps = vec![PlanStep::new(
        "unit",
        "systemd.unit.remove",
        json!({"unit": record.name.unit()}),
    )];
    let mut last = "unit";
    if let Some(domain) = &record.domain {
        steps.push(
            PlanStep::new("site", "caddy.site.remove", json!({"domain": domain})).after("unit"),
        );
        last = "site";
    }
    steps.push(
        PlanStep::new(
            "home",
            "pocketbase.home.remove",
            json!({"name": name, "keep_data": request.keep_data.unwrap_or(true)}),
        )
        .after(last),
    );
    Ok(Plan {
        name: format!("pocketbase-delete-{}", request.name),
        compensate: false,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::Action;

    fn input<'a>(
        fields: &'a Map<String, Value>,
        section: &'a Value,
        subject: Option<&'a Value>,
    ) -> WorkflowInput<'a> {
        WorkflowInput {
            fields,
            section,
            subject,
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// Every step and compensation parses as the API will parse it.
    fn assert_parses(plan: &Plan) {
        for step in &plan.steps {
            Action::parse(step.kind, step.payload.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", step.name));
            if let Some((kind, payload)) = &step.compensate {
                Action::parse(kind, payload.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            }
        }
    }

    #[test]
    fn create_undoes_every_change_and_keeps_the_password_in_one_step() {
        let section = serde_json::to_value(PocketbaseConfig::default()).unwrap();
        let fields = object(json!({
            "name": "my-app", "port": 8090, "domain": "my-app.example.com", "version": "0.40.6",
            "superuser_email": "admin@example.com", "superuser_password": "correct horse",
            "env": {"KEY": "v"},
        }));
        let plan = create(&input(&fields, &section, None)).unwrap();
        assert_parses(&plan);
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "check",
                "home",
                "binary",
                "superuser",
                "unit",
                "start",
                "health",
                "site",
                "verify",
                "observe"
            ]
        );
        let undone: Vec<&str> = plan
            .steps
            .iter()
            .filter(|s| s.compensate.is_some())
            .map(|s| s.name)
            .collect();
        assert_eq!(undone, ["home", "unit", "site"]);
        let with_password: Vec<&str> = plan
            .steps
            .iter()
            .filter(|s| s.payload.to_string().contains("correct horse"))
            .map(|s| s.name)
            .collect();
        assert_eq!(with_password, ["superuser"]);
        let unit = &plan.steps[4].payload;
        assert_eq!(unit["user"], "pb-my-app");
        assert_eq!(unit["hardening"], "strict");
        assert_eq!(
            unit["read_write_paths"],
            json!(["/opt/pocketbase/my-app/pb_data"])
        );
        assert_eq!(
            unit["exec_start"],
            json!([
                "/opt/pocketbase/my-app/pocketbase",
                "serve",
                "--http=127.0.0.1:8090",
                "--dir=/opt/pocketbase/my-app/pb_data"
            ])
        );

        let bare = object(json!({"name": "b", "port": 8091, "version": "0.40.6"}));
        let plan = create(&input(&bare, &section, None)).unwrap();
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "check", "home", "binary", "unit", "start", "health", "observe"
            ]
        );
        let refused = create(&input(
            &object(json!({"name": "b", "port": 80, "version": "1"})),
            &section,
            None,
        ))
        .unwrap_err();
        assert_eq!(refused[0].field, "port");
    }

    #[test]
    fn upgrade_rolls_back_through_its_compensations_and_delete_does_not_undo() {
        let section = serde_json::to_value(PocketbaseConfig::default()).unwrap();
        let record =
            json!({"name": "my-app", "port": 8090, "domain": "a.example.com", "version": "0.40.5"});
        let fields = object(json!({"name": "my-app", "version": "0.40.6"}));
        let plan = upgrade(&input(&fields, &section, Some(&record))).unwrap();
        assert_parses(&plan);
        let undone: Vec<(&str, &str)> = plan
            .steps
            .iter()
            .filter_map(|s| s.compensate.as_ref().map(|(kind, _)| (s.name, *kind)))
            .collect();
        assert_eq!(
            undone,
            [
                ("stop", "systemd.start"),
                ("backup", "pocketbase.restore"),
                ("start", "systemd.stop")
            ]
        );
        let fields = object(json!({"name": "my-app", "keep_data": false}));
        let plan = delete(&input(&fields, &section, Some(&record))).unwrap();
        assert_parses(&plan);
        assert!(!plan.compensate);
        assert_eq!(plan.steps[2].payload["keep_data"], false);
        assert_eq!(plan.steps[1].kind, "caddy.site.remove");
    }
}
