//! The dashboard: a page and its two assets, built into the binary (the
//! machines it runs on have no internet, so nothing comes from a CDN). It
//! reads the same JSON API as any client.

use warp::reply::Reply;

/// `GET /`.
pub const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// `GET /assets/{file}`, for the files the page loads.
pub fn asset(file: &str) -> Option<warp::reply::Response> {
    let (body, kind) = match file {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(warp::reply::with_header(body, "content-type", kind).into_response())
}
