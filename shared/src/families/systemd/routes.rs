//! `/api/v1/systemd`: unit management (the Pockestrator's). Changes and
//! host reads enqueue `systemd.*` operations (202 + the operation, as
//! `POST /api/v1/operations` would); the unit list answers at once from the
//! last observation joined with the units opsqueue installed.
//!
//! Reach is checked by the routes too, before anything is stored (see
//! `SystemdAction::reach`): a unit a `[systemd] deny` pattern matches is
//! `403 forbidden` on every route; the actions on an existing unit also need
//! an `allow` pattern or a unit opsqueue installed on that target. (The
//! worker checks again with its own configuration: it decides.)
//!
//! Logs are an operation (`POST …/{unit}/logs`): its result holds the
//! journal lines.

use super::names::UnitName;
use crate::families::route::{
    Body, Enqueue, Kind, Method, Observed, PathParam, QueryParam, QueryValue, Route, Serves,
    any_object,
};

const UNIT: &[PathParam] = &[PathParam {
    name: "unit",
    description: "Unit name (`web` means `web.service`)",
    field: "unit",
    parse: Some(|text| UnitName::parse(text).map(|unit| unit.to_string())),
    schema: UnitName::schema,
}];

const UNITS: &str = "/api/v1/systemd/units";
const ONE_UNIT: &str = "/api/v1/systemd/units/{unit}";

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: UNITS,
        summary: "The units as last observed, and those opsqueue installed.",
        description: "",
        params: &[],
        serves: Serves::Observed(Observed {
            kind: "unit",
            managed: true,
            answer: "Each unit's observed state (active, sub, load and file state, main pid, …) \
                     with observed_at, and `managed` (the install spec) for the units opsqueue installed",
            how: "",
        }),
    },
    Route {
        method: Method::Post,
        path: UNITS,
        summary: "Install a service unit from a spec (`systemd.unit.install`).",
        description: "Body: `{unit, exec_start: [program, args…], description?, \
                      working_directory?, user?, group?, environment?: {NAME: value}, type? \
                      (exec|simple|notify|oneshot), restart? (on-failure|always|no|…), \
                      restart_sec?, hardening? (basic|strict|none), wanted_by?, enable?, \
                      start?}`. The unit is rendered (never taken as text), checked with \
                      `systemd-analyze verify`, written atomically to `[systemd] unit_dir` \
                      and systemd reloaded. The same spec again is `changed: false`. A unit \
                      a `[systemd] deny` pattern matches is 403.",
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("systemd.unit.install"),
            body: Some(Body {
                description: "The unit's spec",
                schema: any_object,
                required: &[],
            }),
            query: &[],
        }),
    },
    Route {
        method: Method::Get,
        path: ONE_UNIT,
        summary: "One unit as last observed (and its install spec, if opsqueue installed it).",
        description: "",
        params: UNIT,
        serves: Serves::Observed(Observed {
            kind: "unit",
            managed: true,
            answer: "The unit's observed state with observed_at, and `managed`",
            how: "POST /api/v1/systemd/units/{unit}/status observes it, POST /api/v1/systemd/refresh every unit opsqueue may touch",
        }),
    },
    Route {
        method: Method::Delete,
        path: ONE_UNIT,
        summary: "Remove a unit opsqueue installed (`systemd.unit.remove`).",
        description: "Stopped, disabled, its file deleted; an absent unit an `allow` pattern \
                      names is `changed: false` (one reachable only because opsqueue \
                      installed it is out of reach once removed).",
        params: UNIT,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("systemd.unit.remove"),
            body: None,
            query: &[],
        }),
    },
    Route {
        method: Method::Post,
        path: "/api/v1/systemd/units/{unit}/logs",
        summary: "Read a unit's journal (`systemd.logs`).",
        description: "The operation's result holds `{unit, count, truncated, lines: [{time, \
                      priority, pid, identifier, message}]}`.",
        params: UNIT,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("systemd.logs"),
            body: None,
            query: &[
                QueryParam {
                    name: "lines",
                    description: "The last this many lines (1 to 10000, default 100).",
                    value: QueryValue::Count {
                        min: 1,
                        max: super::actions::MAX_LOG_LINES,
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
        path: "/api/v1/systemd/units/{unit}/{verb}",
        summary: "Act on a unit: `start`, `stop`, `restart`, `reload`, `enable`, `disable`, or `status` (observe it).",
        description: "Start of an active unit, stop of a stopped one, enable of an enabled one \
                      (…) complete with `changed: false`. Another verb is 404.",
        params: UNIT,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::ByVerb(&[
                ("start", "systemd.start"),
                ("stop", "systemd.stop"),
                ("restart", "systemd.restart"),
                ("reload", "systemd.reload"),
                ("enable", "systemd.enable"),
                ("disable", "systemd.disable"),
                ("status", "systemd.status"),
            ]),
            body: None,
            query: &[],
        }),
    },
    Route::enqueue(
        Method::Post,
        "/api/v1/systemd/refresh",
        "Observe every unit opsqueue may touch (`systemd.refresh`); the monitor also schedules one (`refresh-systemd`).",
        &[],
        "systemd.refresh",
    ),
];
