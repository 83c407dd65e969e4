//! The dashboard's stylesheet and script, compiled into the binary. Pages
//! link them with `?v=<version>`, so a cached copy never outlives an
//! upgrade.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::problem::ApiError;

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

pub async fn serve(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (body, content_type) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        other => return Err(ApiError::NotFound(format!("no asset {other:?}"))),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body))
}
