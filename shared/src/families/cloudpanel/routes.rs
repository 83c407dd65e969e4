//! `/api/v1/cloudpanel`: the CloudPanel API's routes over `clpctl`. Each
//! enqueues a `cloudpanel.*` operation and answers 202 + the operation; the
//! body is the operation's payload. Passwords are secret fields: stored
//! apart and shown as `"***"` in every answer, including this one. The
//! names in paths are checked by the action's own parser.

use super::actions::UserName;
use super::certificate::CertificateInstall;
use crate::families::route::{
    Body, Enqueue, Kind, Method, Observed, PathParam, Route, Serves, any_object, body_schema,
};
use crate::names::Domain;

/// `POST` of a body that is the whole payload.
const fn create(
    path: &'static str,
    summary: &'static str,
    description: &'static str,
    kind: &'static str,
    body: &'static str,
) -> Route {
    Route {
        method: Method::Post,
        path,
        summary,
        description,
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One(kind),
            body: Some(Body {
                description: body,
                required: &[],
                schema: any_object,
            }),
            query: &[],
        }),
    }
}

/// `GET` of every observed object of `kind` (joined with what opsqueue
/// manages when `managed`).
const fn list(
    path: &'static str,
    summary: &'static str,
    kind: &'static str,
    managed: bool,
    answer: &'static str,
) -> Route {
    Route {
        method: Method::Get,
        path,
        summary,
        description: "",
        params: &[],
        serves: Serves::Observed(Observed {
            kind,
            managed,
            answer,
            how: "",
        }),
    }
}

pub const ROUTES: &[Route] = &[
    list(
        "/api/v1/cloudpanel/sites",
        "The sites as last observed (each site user's htdocs directories), and those opsqueue added.",
        "site",
        true,
        "Each site as observed ({domain, site_user, root_directory}) with observed_at, and \
         `managed` (the spec, without its password) for the sites opsqueue added",
    ),
    list(
        "/api/v1/cloudpanel/databases",
        "The databases opsqueue added (clpctl cannot list databases).",
        "database",
        true,
        "Each database opsqueue added: `managed` {domain, database_name, database_user_name}",
    ),
    list(
        "/api/v1/cloudpanel/users",
        "The panel users as `clpctl user:list` showed them when last observed.",
        "user",
        false,
        "Each user as listed (user_name, and the table's other columns: email, role, …) with observed_at",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/cloudpanel/refresh",
        "Observe the sites and the panel users now (`cloudpanel.list`); the monitor also schedules one (`refresh-cloudpanel`).",
        &[],
        "cloudpanel.list",
    ),
    create(
        "/api/v1/cloudpanel/sites",
        "Add a site (`cloudpanel.site.add`).",
        "Body: `{site_type: php|nodejs|static|python|reverse-proxy, domain, site_user, \
         site_user_password, php_version?, vhost_template?, nodejs_version?, python_version?, \
         app_port?, reverse_proxy_url?}` (each type takes its own fields). A site whose \
         htdocs already exists is `changed: false`.",
        "cloudpanel.site.add",
        "The site",
    ),
    Route::enqueue(
        Method::Delete,
        "/api/v1/cloudpanel/sites/{domain}",
        "Delete a site (`cloudpanel.site.delete`, with `--force`); an absent site is `changed: false`.",
        &[PathParam {
            name: "domain",
            description: "The site's domain",
            field: "domain",
            parse: None,
            schema: Domain::schema,
        }],
        "cloudpanel.site.delete",
    ),
    Route {
        method: Method::Post,
        path: "/api/v1/cloudpanel/sites/{domain}/certificate",
        summary: "Install a site's TLS certificate (`cloudpanel.certificate.install`).",
        description: "Body: `{source: lets-encrypt, subject_alternative_names?}` (clpctl \
                      lets-encrypt:install:certificate; the names must resolve to the server) \
                      or `{source: upload, certificate, private_key, certificate_chain?}` in \
                      PEM (clpctl site:install:certificate). The private key is stored apart, \
                      shown as `\"***\"`, and reaches clpctl as a 0600 file that is removed \
                      when the command ends, never as an argument. A site that does not exist \
                      fails the operation `site_not_found`.",
        params: &[PathParam {
            name: "domain",
            description: "The site's domain",
            field: "domain",
            parse: None,
            schema: Domain::schema,
        }],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("cloudpanel.certificate.install"),
            body: Some(Body {
                description: "Where the certificate comes from",
                schema: body_schema::<CertificateInstall>,
                required: &[],
            }),
            query: &[],
        }),
    },
    create(
        "/api/v1/cloudpanel/databases",
        "Add a database to a site (`cloudpanel.db.add`).",
        "Body: `{domain, database_name, database_user_name, database_user_password}`.",
        "cloudpanel.db.add",
        "The database",
    ),
    create(
        "/api/v1/cloudpanel/users",
        "Add a panel user (`cloudpanel.user.add`).",
        "Body: `{user_name, email, first_name, last_name, password, role: \
         admin|site-manager|user, sites?, timezone?, active?}`. A user that \
         `clpctl user:list` shows is `changed: false`.",
        "cloudpanel.user.add",
        "The user",
    ),
    Route::enqueue(
        Method::Delete,
        "/api/v1/cloudpanel/users/{name}",
        "Delete a panel user (`cloudpanel.user.delete`); an absent user is `changed: false`.",
        &[PathParam {
            name: "name",
            description: "The user name",
            field: "user_name",
            parse: None,
            schema: UserName::schema,
        }],
        "cloudpanel.user.delete",
    ),
];
