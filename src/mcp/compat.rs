//! Only the fields the agreed protocol version defines.
//!
//! The bridge builds its answers once, in the newest shape, and this module takes away what an
//! older revision does not define, so a client that negotiated 2024-11-05 never sees a 2025
//! field. rmcp itself adjusts what differs from 2026-07-28 on (`resultType`, caching hints,
//! non-object structured content).
//!
//! | field | since |
//! |---|---|
//! | `Tool.annotations` | 2025-03-26 |
//! | `Tool.title`, `Tool.outputSchema`, `Tool._meta`, `CallToolResult.structuredContent`, `Implementation.title` | 2025-06-18 |
//! | `Tool.icons`, `Implementation.{icons, websiteUrl, description}` | 2025-11-25 |

use rmcp::model::{CallToolResult, InitializeResult, ProtocolVersion, Tool};

/// Whether `version` is `since` or later (revisions are dates, so they order as text).
fn at_least(version: &ProtocolVersion, since: &str) -> bool {
    version.as_str() >= since
}

/// A tool as `version` defines it.
pub fn tool(version: &ProtocolVersion, mut tool: Tool) -> Tool {
    if !at_least(version, "2025-11-25") {
        tool.icons = None;
    }
    if !at_least(version, "2025-06-18") {
        tool.title = None;
        tool.output_schema = None;
        tool.meta = None;
    }
    if !at_least(version, "2025-03-26") {
        tool.annotations = None;
    }
    tool
}

/// A tool result as `version` defines it. (The text block already carries the serialisation
/// of the structured content, so nothing is lost for an older client.)
pub fn call_result(version: &ProtocolVersion, mut result: CallToolResult) -> CallToolResult {
    if !at_least(version, "2025-06-18") {
        result.structured_content = None;
    }
    result
}

/// The `initialize` answer for the version it agreed.
pub fn initialize_result(mut info: InitializeResult) -> InitializeResult {
    let version = info.protocol_version.clone();
    if !at_least(&version, "2025-11-25") {
        info.server_info.icons = None;
        info.server_info.website_url = None;
        info.server_info.description = None;
    }
    if !at_least(&version, "2025-06-18") {
        info.server_info.title = None;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ContentBlock, JsonObject, ToolAnnotations};
    use serde_json::json;

    fn full_tool() -> Tool {
        let schema: JsonObject = json!({"type": "object"}).as_object().cloned().unwrap();
        Tool::new("cap_x", "d", schema.clone())
            .with_title("cap.x")
            .with_raw_output_schema(std::sync::Arc::new(schema))
            .with_meta(rmcp::model::MetaObject(JsonObject::new()))
            .annotate(ToolAnnotations::new().read_only(true))
    }

    #[test]
    fn each_version_gets_only_the_tool_fields_it_defines() {
        let wire = |v: &ProtocolVersion| serde_json::to_value(tool(v, full_tool())).unwrap();
        let old = wire(&ProtocolVersion::V_2024_11_05);
        for key in ["title", "outputSchema", "_meta", "annotations"] {
            assert!(old.get(key).is_none(), "{key} in {old}");
        }
        assert_eq!(old["name"], "cap_x");
        assert_eq!(old["inputSchema"]["type"], "object");
        let mid = wire(&ProtocolVersion::V_2025_03_26);
        assert!(
            mid.get("annotations").is_some() && mid.get("title").is_none(),
            "{mid}"
        );
        for v in [
            ProtocolVersion::V_2025_06_18,
            ProtocolVersion::V_2025_11_25,
            ProtocolVersion::V_2026_07_28,
        ] {
            let new = wire(&v);
            for key in ["title", "outputSchema", "_meta", "annotations"] {
                assert!(new.get(key).is_some(), "{key} missing for {v}: {new}");
            }
        }
    }

    #[test]
    fn structured_content_only_from_2025_06_18() {
        let mut r = CallToolResult::success(vec![ContentBlock::text("{\"a\":1}")]);
        r.structured_content = Some(json!({"a": 1}));
        let old = call_result(&ProtocolVersion::V_2025_03_26, r.clone());
        assert!(old.structured_content.is_none());
        assert_eq!(old.content.len(), 1, "the text block stays");
        let new = call_result(&ProtocolVersion::V_2025_06_18, r);
        assert_eq!(new.structured_content, Some(json!({"a": 1})));
    }
}
