//! `/api/v1/caddy`: reverse-proxy sites for deployed services. Changes
//! enqueue `caddy.*` operations (202 + the operation); the site list
//! answers at once from the last observation of Caddy's configuration,
//! joined with the sites opsqueue manages (their desired upstream).
//!
//! The managed sites are the desired state: `POST /api/v1/caddy/reload`
//! (and the monitor's `refresh-caddy` schedule) re-applies them, so they
//! survive a Caddy restart; `POST /api/v1/caddy/validate` reports drift
//! without changing anything.

use super::actions::SiteSpec;
use crate::families::route::{
    Body, Enqueue, Kind, Method, Observed, PathParam, Route, Serves, body_schema,
};
use crate::names::Domain;

const DOMAIN: &[PathParam] = &[PathParam {
    name: "domain",
    description: "The site's domain",
    field: "domain",
    parse: Some(|text| Domain::parse(text).map(|domain| domain.to_string())),
    schema: Domain::schema,
}];

const SITES: &str = "/api/v1/caddy/sites";
const SITE: &str = "/api/v1/caddy/sites/{domain}";

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: SITES,
        summary: "The sites Caddy served when last observed, and those opsqueue manages.",
        description: "",
        params: &[],
        serves: Serves::Observed(Observed {
            kind: "site",
            managed: true,
            answer: "Each site as observed (domain, server, upstreams, whether opsqueue added it) \
                     with observed_at, and `managed` (its desired upstream) for the sites opsqueue manages",
            how: "",
        }),
    },
    Route {
        method: Method::Post,
        path: SITES,
        summary: "Proxy a domain to a local upstream (`caddy.site.add`).",
        description: "Body: `{domain, upstream}` with `upstream` as `host:port` on this host \
                      or a private network (`127.0.0.1:8090`, `[::1]:8090`, `localhost:8090`, \
                      `10.0.0.5:8080`). The same site again is `changed: false`; another \
                      upstream replaces the old one in place.",
        params: &[],
        serves: Serves::Enqueue(Enqueue {
            kind: Kind::One("caddy.site.add"),
            body: Some(Body {
                description: "{domain, upstream}",
                schema: body_schema::<SiteSpec>,
                required: &[],
            }),
            query: &[],
        }),
    },
    Route {
        method: Method::Get,
        path: SITE,
        summary: "One site as last observed, and its desired state if opsqueue manages it.",
        description: "",
        params: DOMAIN,
        serves: Serves::Observed(Observed {
            kind: "site",
            managed: true,
            answer: "The site with observed_at and `managed`",
            how: "POST /api/v1/caddy/refresh observes every site",
        }),
    },
    Route::enqueue(
        Method::Delete,
        SITE,
        "Remove a site (`caddy.site.remove`); an absent one is `changed: false`.",
        DOMAIN,
        "caddy.site.remove",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/caddy/reload",
        "Re-apply every managed site to Caddy (`caddy.reload`), e.g. after a restart; the result lists the sites that had to be re-applied.",
        &[],
        "caddy.reload",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/caddy/validate",
        "Compare the managed sites with Caddy's live configuration (`caddy.validate`): `{ok, checked, missing, drifted, duplicated}`.",
        &[],
        "caddy.validate",
    ),
    Route::enqueue(
        Method::Post,
        "/api/v1/caddy/refresh",
        "Observe the sites Caddy serves (`caddy.list`).",
        &[],
        "caddy.list",
    ),
];
