//! `/api/v1/pm2`: the PM2 controller's routes. Changes enqueue `pm2.*`
//! operations (202 + the operation, as `POST /api/v1/operations` would);
//! reads answer at once from the last observation, with `observed_at`.
//!
//! Logs: the API cannot read a log file, so `POST …/{name}/logs` enqueues a
//! `pm2.logs` operation (its result holds the lines), and `GET
//! …/{name}/logs` serves the lines that the last such operation observed,
//! with their `observed_at`. The process list is refreshed by `pm2.list`
//! (`POST /api/v1/pm2/refresh`, and the monitor's `refresh-pm2` schedule).

use super::actions::{MAX_LOG_LINES, ProcessName, Start, Update};
use crate::families::route::{
    Body, Enqueue, Kind, Method, Observed, PathParam, QueryParam, QueryValue, Required, Route,
    Serves, body_schema,
};

const NAME: &[PathParam] = &[PathParam {
    name: "name",
    description: "App name",
    field: "name",
    parse: Some(|text| ProcessName::parse(text).map(|name| name.to_string())),
    schema: ProcessName::schema,
}];

const PROCESSES: &str = "/api/v1/pm2/processes";
const PROCESS: &str = "/api/v1/pm2/processes/{name}";
const LOGS: &str = "/api/v1/pm2/processes/{name}/logs";

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: PROCESSES,
        summary: "The apps pm2 ran when last observed.",
        description: "",
        params: &[],
        serves: Serves::Observed(Observed {
            kind: "process",
            managed: false,
            answer: "Every app as last observed (whitelisted fields, never the environment), each with observed_at",
            how: "",
        }),
    },
    Route {
        method: Method::Post,
        path: PROCESSES,
        summary: "Start an app from a spec (`pm2.start`).",
        description: "Body: `{name, script, interpreter?, cwd?, args?, env?, instances?, \
                      wait_ready?, listen_timeout_ms?, autorestart?, max_memory_restart?, \
                      log_date_format?}`; `script` and `cwd` must lie inside \
                      `[pm2] base_dir`. An app of that name that is already online is left \
                      alone (`changed: false`). `env` is stored apart and shown as `\"***\"`.",
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pm2.start"),
            body: Some(Body {
                description: "The app's spec",
                schema: body_schema::<Start>,
                required: &[Required {
                    field: "script",
                    message: "creating an app needs a script (POST …/{name}/start starts an existing one)",
                }],
            }),
            query: &[],
        }),
    },
    Route {
        method: Method::Get,
        path: PROCESS,
        summary: "One app as last observed.",
        description: "",
        params: NAME,
        serves: Serves::Observed(Observed {
            kind: "process",
            managed: false,
            answer: "The app's observed fields with observed_at",
            how: "POST /api/v1/pm2/refresh observes every app",
        }),
    },
    Route {
        method: Method::Patch,
        path: PROCESS,
        summary: "Change an app's settings without deleting it (`pm2.update`).",
        description: "Body: any of `{instances, env, args, autorestart, max_memory_restart, \
                      log_date_format}`; what is absent is left as it is. Applied through \
                      pm2's own reload path (an ecosystem file given to `pm2 reload` in \
                      cluster mode, `pm2 restart` in fork mode, then `pm2 scale`), so a \
                      stopped app is started. The operation completes when every instance \
                      is online and has stayed up for a few seconds; if the app does not \
                      come up with the new settings, the previous ones are put back and the \
                      operation fails `pm2_update_failed`. `env` sets the variables it \
                      names (pm2 cannot remove one from a running app) and is stored apart, \
                      shown as `\"***\"`; `args` replaces the whole list. Settings equal to \
                      the app's are `changed: false`. An app pm2 does not have fails the \
                      operation `process_not_found`.",
        params: NAME,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pm2.update"),
            body: Some(Body {
                description: "The settings to change",
                schema: body_schema::<Update>,
                required: &[],
            }),
            query: &[],
        }),
    },
    Route::enqueue(
        Method::Delete,
        PROCESS,
        "Delete an app (`pm2.delete`); an absent app is `changed: false`.",
        NAME,
        "pm2.delete",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/pm2/processes/{name}/start",
        "Start an existing app (`pm2.start` without a spec).",
        NAME,
        "pm2.start",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/pm2/processes/{name}/stop",
        "Stop an app (`pm2.stop`).",
        NAME,
        "pm2.stop",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/pm2/processes/{name}/restart",
        "Restart an app (`pm2.restart`).",
        NAME,
        "pm2.restart",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/pm2/processes/{name}/reload",
        "Reload an app (`pm2.reload`: zero-downtime in cluster mode).",
        NAME,
        "pm2.reload",
    ),
    Route {
        method: Method::Get,
        path: LOGS,
        summary: "The log lines the last `pm2.logs` operation observed.",
        description: "",
        params: NAME,
        serves: Serves::Observed(Observed {
            kind: "logs",
            managed: false,
            answer: "{name, lines, out, err, observed_at, observed_by}",
            how: "POST /api/v1/pm2/processes/{name}/logs reads them",
        }),
    },
    Route {
        method: Method::Post,
        path: LOGS,
        summary: "Read an app's last log lines (`pm2.logs`).",
        description: "The operation's result holds them, and `GET` on this path serves them afterwards.",
        params: NAME,
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("pm2.logs"),
            body: None,
            query: &[QueryParam {
                name: "lines",
                description: "The last N lines of each stream (default 100, at most 1000).",
                value: QueryValue::Count {
                    min: 1,
                    max: MAX_LOG_LINES,
                },
            }],
        }),
    },
    Route::enqueue(
        Method::Delete,
        LOGS,
        "Empty an app's log files (`pm2.flush`).",
        NAME,
        "pm2.flush",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/pm2/refresh",
        "Observe every app now (`pm2.list`); `GET /api/v1/pm2/processes` serves the result afterwards.",
        &[],
        "pm2.list",
    ),
];
