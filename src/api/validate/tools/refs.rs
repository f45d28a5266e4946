//! A tool's `parameters` placed inside the call schema `{"name", "arguments"}` keep their
//! local `$ref`s working: the schema's own `$defs` / `definitions` move to the call schema's
//! root (prefixed per tool, so that two tools' `$defs/Item` stay apart), and every local
//! pointer is rewritten to where its target now lies. A nested pydantic model (what
//! LlamaIndex's and LangChain's function-calling programs send) is such a schema.

use serde_json::{Map, Value as Json};

/// `parameters` as the `arguments` of tool `tool` at JSON pointer `base` (e.g.
/// `#/properties/arguments`), its definitions moved into `defs`.
pub fn hoisted(parameters: &Json, base: &str, tool: usize, defs: &mut Map<String, Json>) -> Json {
    let mut params = parameters.clone();
    if let Some(obj) = params.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(Json::Object(found)) = obj.remove(key) {
                for (name, mut def) in found {
                    rewrite(&mut def, base, tool);
                    defs.insert(format!("t{tool}_{name}"), def);
                }
            }
        }
    }
    rewrite(&mut params, base, tool);
    params
}

/// Rewrites every local `$ref` under `v`.
fn rewrite(v: &mut Json, base: &str, tool: usize) {
    match v {
        Json::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Json::String(r) if k == "$ref" => *r = moved(r, base, tool),
                    _ => rewrite(child, base, tool),
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| rewrite(i, base, tool)),
        _ => {}
    }
}

/// Where the local pointer `r` of tool `tool` points now; other references are kept.
fn moved(r: &str, base: &str, tool: usize) -> String {
    for defs in ["#/$defs/", "#/definitions/"] {
        if let Some(rest) = r.strip_prefix(defs) {
            return format!("#/$defs/t{tool}_{rest}");
        }
    }
    match r.strip_prefix('#') {
        Some("") => base.to_string(),
        Some(path) if path.starts_with('/') => format!("{base}{path}"),
        _ => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn definitions_move_to_the_root_per_tool_and_pointers_follow() {
        let params = json!({
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "owner": {"$ref": "#/definitions/Person"},
                "again": {"$ref": "#"},
                "size": {"$ref": "#/properties/items"},
                "far": {"$ref": "https://example.com/s.json"},
            },
            "$defs": {"Item": {"type": "object", "properties": {"parent": {"$ref": "#/$defs/Item"}}}},
            "definitions": {"Person": {"type": "string"}},
        });
        let mut defs = Map::new();
        let out = hoisted(&params, "#/anyOf/1/properties/arguments", 1, &mut defs);
        assert!(out.get("$defs").is_none() && out.get("definitions").is_none());
        let p = &out["properties"];
        assert_eq!(p["items"]["items"]["$ref"], "#/$defs/t1_Item");
        assert_eq!(p["owner"]["$ref"], "#/$defs/t1_Person");
        assert_eq!(p["again"]["$ref"], "#/anyOf/1/properties/arguments");
        assert_eq!(
            p["size"]["$ref"],
            "#/anyOf/1/properties/arguments/properties/items"
        );
        assert_eq!(p["far"]["$ref"], "https://example.com/s.json");
        assert_eq!(
            defs["t1_Item"]["properties"]["parent"]["$ref"],
            "#/$defs/t1_Item"
        );
        assert_eq!(defs["t1_Person"], json!({"type": "string"}));
    }
}
