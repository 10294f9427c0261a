//! Keeps an OpenAPI document and the warp routes that serve it from
//! drifting apart: the paths that a source file's `warp::path!` macros (and
//! `warp::path::end()`) match, against the paths the document lists.

use std::collections::BTreeSet;

use serde_json::Value;

/// The paths matched by the `warp::path!(..)` and `warp::path::end()`
/// filters in `source`, each parameter written `{}`.
pub fn route_paths(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if source.contains("warp::path::end()") {
        out.insert("/".to_string());
    }
    let mut rest = source;
    while let Some(i) = rest.find("warp::path!(") {
        rest = &rest[i + "warp::path!(".len()..];
        let Some(end) = rest.find(')') else { break };
        let path: Vec<String> = rest[..end]
            .split('/')
            .map(str::trim)
            .map(
                |seg| match seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(lit) => lit.to_string(),
                    None => "{}".to_string(),
                },
            )
            .collect();
        out.insert(format!("/{}", path.join("/")));
        rest = &rest[end..];
    }
    out
}

/// The keys of an OpenAPI `paths` object, each `{name}` written `{}`.
pub fn doc_paths(paths: &Value) -> BTreeSet<String> {
    paths
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .map(|p| {
            p.split('/')
                .map(|seg| {
                    if seg.starts_with('{') && seg.ends_with('}') {
                        "{}"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_macros_and_documents() {
        let src = r#"let a = warp::path!("v1" / "views" / String); let b = warp::path::end();"#;
        assert_eq!(
            route_paths(src),
            ["/", "/v1/views/{}"].map(String::from).into()
        );
        let doc = serde_json::json!({ "/v1/views/{view}": {}, "/": {} });
        assert_eq!(doc_paths(&doc), route_paths(src));
    }
}
