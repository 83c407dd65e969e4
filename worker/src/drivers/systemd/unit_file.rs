//! Renders a service unit file from a parsed [`UnitSpec`]; never from text a
//! caller wrote.
//!
//! Quoting follows systemd.service(5) and systemd.unit(5), so what the
//! service receives is exactly the argument vector that was asked for:
//! - every `ExecStart=` word is double-quoted, with `\` and `"` escaped
//!   (the C-style escapes systemd undoes), `%` doubled (specifiers) and `$`
//!   doubled (environment substitution); a lone `;` (a command separator
//!   even when quoted) is written `\;`;
//! - `Environment=` entries are one quoted `"NAME=value"` each (`\`, `"`
//!   escaped, `%` doubled; `$` is literal there);
//! - `Description=` doubles `%` (the parser refused backslashes and
//!   control characters, so no value can end a line or continue one);
//! - paths and account names are plain by construction (their types allow
//!   no quotes, spaces, `%` or `$`).

use opsqueue_shared::families::systemd::SystemdScope;
use opsqueue_shared::families::systemd::{Hardening, UnitSpec};

/// The first line of every unit opsqueue renders. Finding it in a file in
/// the unit directory tells the driver the file is its own (an install
/// whose record was lost with its worker may be finished by a re-run).
pub const HEADER: &str =
    "# Rendered by opsqueue (systemd.unit.install); changes here are overwritten.";

/// One `ExecStart=` word.
fn exec_word(word: &str) -> String {
    if word == ";" {
        return r"\;".to_owned();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str(r"\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// One `Environment=` assignment, quoted.
fn environment_word(name: &str, value: &str) -> String {
    let mut quoted = format!("\"{name}=");
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str(r"\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The sandboxing directives of a preset (the working directory stays
/// writable under `strict`).
fn hardening_lines(spec: &UnitSpec) -> Vec<String> {
    let basic = [
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ];
    let mut lines: Vec<String> = Vec::new();
    match spec.hardening {
        Hardening::None => {}
        Hardening::Basic => {
            lines.extend(basic.iter().map(|l| l.to_string()));
            lines.push("ProtectSystem=full".into());
        }
        Hardening::Strict => {
            lines.extend(basic.iter().map(|l| l.to_string()));
            lines.extend(
                [
                    "ProtectSystem=strict",
                    // Fails (226/NAMESPACE) where /proc/sys cannot be
                    // remounted, as in some containers; hence not in basic.
                    "ProtectKernelTunables=yes",
                    // Read-only, not hidden: services often live under /home.
                    "ProtectHome=read-only",
                    "PrivateDevices=yes",
                    "RestrictNamespaces=yes",
                    "RestrictRealtime=yes",
                    // Breaks JIT runtimes (node, java); use basic for those.
                    "MemoryDenyWriteExecute=yes",
                    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                    "SystemCallArchitectures=native",
                    "SystemCallFilter=@system-service",
                    "SystemCallErrorNumber=EPERM",
                    "CapabilityBoundingSet=",
                ]
                .iter()
                .map(|l| l.to_string()),
            );
            if let Some(dir) = &spec.working_directory {
                lines.push(format!("ReadWritePaths={dir}"));
            }
        }
    }
    lines
}

/// The unit file for `spec`, for a manager of `scope`.
pub fn render(spec: &UnitSpec, scope: SystemdScope) -> String {
    let mut out = Vec::new();
    out.push(HEADER.to_owned());
    out.push("[Unit]".into());
    let description = spec
        .description
        .as_ref()
        .map_or(spec.unit.as_str(), |d| d.as_str());
    out.push(format!("Description={}", description.replace('%', "%%")));
    out.push("After=network.target".into());
    out.push(String::new());

    out.push("[Service]".into());
    out.push(format!("Type={}", spec.service_type.as_str()));
    let argv: Vec<String> = std::iter::once(spec.exec_start.program().as_str())
        .chain(spec.exec_start.args().iter().map(String::as_str))
        .map(exec_word)
        .collect();
    out.push(format!("ExecStart={}", argv.join(" ")));
    if let Some(dir) = &spec.working_directory {
        out.push(format!("WorkingDirectory={dir}"));
    }
    if let Some(user) = &spec.user {
        out.push(format!("User={user}"));
    }
    if let Some(group) = &spec.group {
        out.push(format!("Group={group}"));
    }
    for (name, value) in &spec.environment {
        out.push(format!(
            "Environment={}",
            environment_word(name.as_str(), value.as_str())
        ));
    }
    if let Some(file) = &spec.environment_file {
        out.push(format!("EnvironmentFile={file}"));
    }
    out.push(format!("Restart={}", spec.restart.as_str()));
    if let Some(secs) = spec.restart_sec {
        out.push(format!("RestartSec={secs}"));
    }
    out.extend(hardening_lines(spec));
    for path in &spec.read_write_paths {
        out.push(format!("ReadWritePaths={path}"));
    }
    out.push(String::new());

    out.push("[Install]".into());
    let default_target = match scope {
        SystemdScope::System => "multi-user.target",
        SystemdScope::User => "default.target",
    };
    let target = spec
        .wanted_by
        .as_ref()
        .map_or(default_target, |t| t.as_str());
    out.push(format!("WantedBy={target}"));
    out.push(String::new());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsqueue_shared::Action;
    use opsqueue_shared::families::systemd::SystemdAction;
    use serde_json::{Value, json};

    fn spec(payload: Value) -> UnitSpec {
        match Action::parse("systemd.unit.install", payload).unwrap() {
            Action::Systemd(SystemdAction::Install(spec)) => *spec,
            other => panic!("not an install: {other:?}"),
        }
    }

    #[test]
    fn exec_start_words_are_quoted_for_systemd_and_never_for_a_shell() {
        let unit = render(
            &spec(json!({
                "unit": "argv",
                "exec_start": ["/bin/sh", "-c", "printf '%s\\n' \"$@\"", "sh", "a b", "$HOME",
                               "100%", "quo\"te", "back\\slash", ";", ";x", "{}", "'single'"],
            })),
            SystemdScope::System,
        );
        let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(
            exec,
            r#"ExecStart="/bin/sh" "-c" "printf '%%s\\n' \"$$@\"" "sh" "a b" "$$HOME" "100%%" "quo\"te" "back\\slash" \; ";x" "{}" "'single'""#
        );
    }

    #[test]
    fn a_full_spec_renders_every_directive_once_with_its_preset() {
        let unit = render(
            &spec(json!({
                "unit": "pb-app1.service",
                "description": "PocketBase app1 at 100%",
                "exec_start": ["/opt/pb/app1/pocketbase", "serve", "--http", "127.0.0.1:8090"],
                "working_directory": "/opt/pb/app1",
                "user": "pb",
                "group": "pb",
                "environment": {"B": "x \"y\" 5%", "A": "$literal"},
                "type": "notify",
                "restart": "always",
                "restart_sec": 3,
                "hardening": "strict",
            })),
            SystemdScope::System,
        );
        let expected = [
            HEADER,
            "[Unit]",
            "Description=PocketBase app1 at 100%%",
            "After=network.target",
            "",
            "[Service]",
            "Type=notify",
            r#"ExecStart="/opt/pb/app1/pocketbase" "serve" "--http" "127.0.0.1:8090""#,
            "WorkingDirectory=/opt/pb/app1",
            "User=pb",
            "Group=pb",
            r#"Environment="A=$literal""#,
            r#"Environment="B=x \"y\" 5%%""#,
            "Restart=always",
            "RestartSec=3",
        ];
        let lines: Vec<&str> = unit.lines().collect();
        assert_eq!(&lines[..expected.len()], expected);
        assert!(lines.contains(&"ProtectSystem=strict"));
        assert!(lines.contains(&"ReadWritePaths=/opt/pb/app1"));
        assert!(!lines.contains(&"ProtectSystem=full"));
        assert_eq!(lines[lines.len() - 1], "WantedBy=multi-user.target");
        assert!(unit.ends_with('\n'));
    }

    #[test]
    fn an_environment_file_and_writable_paths_are_rendered_under_any_preset() {
        for hardening in ["none", "basic", "strict"] {
            let unit = render(
                &spec(json!({
                    "unit": "pocketbase-app1",
                    "exec_start": ["/opt/pocketbase/app1/pocketbase", "serve"],
                    "working_directory": "/opt/pocketbase/app1/pb_data",
                    "environment_file": "/opt/pocketbase/app1/service.env",
                    "read_write_paths": ["/opt/pocketbase/app1/pb_data", "/var/lib/x"],
                    "hardening": hardening,
                })),
                SystemdScope::System,
            );
            let lines: Vec<&str> = unit.lines().collect();
            assert!(lines.contains(&"EnvironmentFile=/opt/pocketbase/app1/service.env"));
            assert!(lines.contains(&"ReadWritePaths=/opt/pocketbase/app1/pb_data"));
            assert!(lines.contains(&"ReadWritePaths=/var/lib/x"));
        }
    }

    #[test]
    fn the_defaults_are_a_basic_sandbox_and_the_scope_s_default_target() {
        let unit = render(
            &spec(json!({"unit": "web", "exec_start": ["/usr/bin/python3"]})),
            SystemdScope::User,
        );
        assert!(unit.contains("\nDescription=web.service\n"));
        assert!(unit.contains("\nType=exec\n"));
        assert!(unit.contains("\nRestart=on-failure\n"));
        assert!(unit.contains("\nNoNewPrivileges=yes\n"));
        assert!(unit.contains("\nProtectSystem=full\n"));
        assert!(unit.contains("\nWantedBy=default.target\n"));
        let bare = render(
            &spec(
                json!({"unit": "web", "exec_start": ["/usr/bin/python3"], "hardening": "none", "wanted_by": "graphical.target"}),
            ),
            SystemdScope::User,
        );
        assert!(!bare.contains("Protect"));
        assert!(bare.contains("\nWantedBy=graphical.target\n"));
    }
}
