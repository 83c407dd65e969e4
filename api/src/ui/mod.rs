//! The dashboard (placeholder while it is built).

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
