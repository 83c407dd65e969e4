//! `/api/v1/pocketbase`: the Pockestrator's API as typed routes. Create,
//! upgrade and delete build workflows (202 + the workflow); control, logs,
//! validation and version installs enqueue one operation (202 + the
//! operation); the service reads answer at once from the service records
//! joined with their last observation. `GET system/info` and `GET
//! system/health` are written by hand in the API (they answer with the
//! API's own facts and a 503).

use super::names::ServiceName;
use super::workflows;
use crate::families::route::{
    Body, Enqueue, Filter, Kind, Match, Method, Observed, ObservedPage, PathParam, QueryParam,
    QueryValue, Required, Route, Serves, Workflow, any_object,
};
use crate::families::systemd::MAX_LOG_LINES;

const NAME: &[PathParam] = &[PathParam {
    name: "name",
    description: "The service's name (`my-app`)",
    field: "name",
    parse: Some(|text| ServiceName::parse(text).map(|name| name.to_string())),
    schema: ServiceName::schema,
}];

const SERVICES: &str = "/api/v1/pocketbase/services";
const ONE_SERVICE: &str = "/api/v1/pocketbase/services/{name}";
const LOGS: &str = "/api/v1/pocketbase/services/{name}/logs";

const SERVICE_ANSWER: &str = "The service's record (`managed.spec`: name, port, domain, version, \
    description, created_at, created_by) joined with its runtime state as last observed: `status` \
    (the unit's active state, or `deploying`), `unit` (active and sub state, main pid, restarts), \
    `memory_bytes`, `cpu_usage_nsec`, `cpu_percent`, `caddy` (present, missing, drifted, none), \
    `health` (the last answer of /api/health), `observed_at`";

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: SERVICES,
        summary: "The services: their records joined with their last observed state.",
        description: "Filters: `status` (`active`, `inactive`, `failed`, `deploying`, …), \
                      `name` (a prefix), `domain`; `limit` (default 50) and `offset`.",
        params: &[],
        serves: Serves::ObservedPage(ObservedPage {
            observed: Observed {
                kind: "service",
                managed: true,
                answer: SERVICE_ANSWER,
                how: "",
            },
            filters: &[
                Filter {
                    name: "status",
                    description: "Only services in this state (`active`, `inactive`, `failed`, `deploying`, …).",
                    pointer: "/status",
                    matches: Match::Equals,
                },
                Filter {
                    name: "name",
                    description: "Only services whose name starts with this.",
                    pointer: "/name",
                    matches: Match::Prefix,
                },
                Filter {
                    name: "domain",
                    description: "Only the service of this domain.",
                    pointer: "/managed/spec/domain",
                    matches: Match::Equals,
                },
            ],
        }),
    },
    Route {
        method: Method::Post,
        path: SERVICES,
        summary: "Create a PocketBase service (a workflow that undoes itself on failure).",
        description: "Body: `{name, port, version, domain?, description?, superuser_email?, \
                      superuser_password? (secret), env? (secret, {NAME: value})}` (the seed's \
                      `project_name` and `pocketbase_version` work too). Steps: check (name unused, \
                      port free, domain not served by another site, version cached) → system user \
                      and directory with pb_data → binary from the version cache → superuser \
                      (when credentials are given) → unit `pocketbase-{name}.service` (hardened, \
                      verified, enabled) → start → health → Caddy site (with a domain) → verify \
                      through Caddy → observe. A failure undoes the completed steps in reverse.",
        params: &[],
        serves: Serves::Workflow(Workflow {
            build: workflows::create,
            body: Some(Body {
                schema: any_object,
                description: "The service",
                required: &[],
            }),
            query: &[],
            subject: None,
            steps: "check, home, binary, superuser?, unit, start, health, site?, verify?, observe",
        }),
    },
    Route {
        method: Method::Get,
        path: ONE_SERVICE,
        summary: "One service: its record and its last observed state.",
        description: "",
        params: NAME,
        serves: Serves::Observed(Observed {
            kind: "service",
            managed: true,
            answer: SERVICE_ANSWER,
            how: "POST /api/v1/pocketbase/services/{name}/status observes it",
        }),
    },
    Route {
        method: Method::Put,
        path: ONE_SERVICE,
        summary: "Upgrade a service to another cached version, rolled back if it fails its health check.",
        description: "Body: `{version}`. Steps: stop → backup (pb_data and the binary) → binary → \
                      start → health → observe; a failure restores the old binary, data and \
                      version and starts the service again.",
        params: NAME,
        serves: Serves::Workflow(Workflow {
            build: workflows::upgrade,
            body: Some(Body {
                schema: any_object,
                description: "`{version}`",
                required: &[Required {
                    field: "version",
                    message: "the version to upgrade to",
                }],
            }),
            query: &[],
            subject: Some("service"),
            steps: "stop, backup, binary, start, health, observe",
        }),
    },
    Route {
        method: Method::Delete,
        path: ONE_SERVICE,
        summary: "Delete a service: unit, Caddy site, directory and user.",
        description: "`?keep_data=true` (the default) moves pb_data to \
                      `{base_dir}/.trash/{name}-{timestamp}`; `false` deletes it. A failed delete \
                      stops where it failed; retry the workflow to finish it.",
        params: NAME,
        serves: Serves::Workflow(Workflow {
            build: workflows::delete,
            body: None,
            query: &[QueryParam {
                name: "keep_data",
                description: "Keep pb_data in the trash (default true).",
                value: QueryValue::Flag,
            }],
            subject: Some("service"),
            steps: "unit, site?, home",
        }),
    },
    Route {
        method: Method::Get,
        path: LOGS,
        summary: "The journal lines the last logs read returned.",
        description: "",
        params: NAME,
        serves: Serves::Observed(Observed {
            kind: "logs",
            managed: false,
            answer: "`{lines: [{time, priority, pid, identifier, message}], count, truncated}` with observed_at",
            how: "POST /api/v1/pocketbase/services/{name}/logs reads the journal",
        }),
    },
    Route {
        method: Method::Post,
        path: LOGS,
        summary: "Read a service's journal (`pocketbase.logs`).",
        description: "The operation's result holds the lines; `GET` the same path reads them again.",
        params: NAME,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pocketbase.logs"),
            body: None,
            query: &[
                QueryParam {
                    name: "lines",
                    description: "The last this many lines (1 to 10000, default 100).",
                    value: QueryValue::Count {
                        min: 1,
                        max: MAX_LOG_LINES,
                    },
                },
                QueryParam {
                    name: "since",
                    description: "Only lines from this time on (RFC 3339).",
                    value: QueryValue::Time,
                },
            ],
        }),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/pocketbase/services/{name}/{verb}",
        summary: "Control a service: `start`, `stop`, `restart`, or `status` (observe it now).",
        description: "The result holds the unit's state; the service's observation is updated. \
                      Another verb is 404, a service opsqueue does not manage is 404.",
        params: NAME,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::ByVerb(&[
                ("start", "pocketbase.start"),
                ("stop", "pocketbase.stop"),
                ("restart", "pocketbase.restart"),
                ("status", "pocketbase.status"),
            ]),
            body: None,
            query: &[],
        }),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/pocketbase/validate/service",
        summary: "What create would refuse, checked on the host (`pocketbase.validate`).",
        description: "Body: as create. The result is `{valid, errors: [{field, message, code}], \
                      warnings: [...]}`; nothing changes.",
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pocketbase.validate"),
            body: Some(Body {
                schema: any_object,
                description: "The service, as create takes it",
                required: &[],
            }),
            query: &[],
        }),
    },
    Route::enqueue(
        Method::Post,
        "/api/v1/pocketbase/validate/system",
        "Check the host (`pocketbase.system.validate`): systemd, Caddy's admin API, the base and versions directories, useradd; the result is `{valid, checks: [{name, ok, message}]}`.",
        &[],
        "pocketbase.system.validate",
    ),
    Route {
        method: Method::Get,
        path: "/api/v1/pocketbase/versions",
        summary: "The versions in the cache (installed by `pocketbase.version.install`).",
        description: "",
        params: &[],
        serves: Serves::Observed(Observed {
            kind: "version",
            managed: true,
            answer: "Each version with its sha256, source and installed_at",
            how: "",
        }),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/pocketbase/versions",
        summary: "Put a version in the cache (`pocketbase.version.install`).",
        description: "Body: `{version, sha256, url}` (an https:// release archive or binary) or \
                      `{version, sha256, path}` (a file on the host); the sha256 is mandatory \
                      and checked before anything is kept.",
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pocketbase.version.install"),
            body: Some(Body {
                schema: any_object,
                description: "The version and where it comes from",
                required: &[],
            }),
            query: &[],
        }),
    },
    Route::enqueue(
        Method::Post,
        "/api/v1/pocketbase/refresh",
        "Observe every service (`pocketbase.refresh`); the monitor also schedules one (`refresh-pocketbase`).",
        &[],
        "pocketbase.refresh",
    ),
];
