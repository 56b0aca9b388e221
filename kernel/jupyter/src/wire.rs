//! Reading requests off the shell socket, with the protocol's optional fields filled in.
//!
//! Why: the protocol crate (jupyter-protocol 2.0) parses each request into a typed struct
//! whose fields are all required, so a request that leaves out a field the messaging spec
//! marks optional is rejected and lost before the kernel sees it — `jupyter_client` sends
//! `history_request`s of type `search` without `n` and `unique`. Here the message is read
//! and its signature checked as the crate does, the missing optional fields get the spec's
//! defaults, and only then is it parsed.

use anyhow::{Context, Result};
use jupyter_zmq_client::{Connection, Header, JupyterMessage, JupyterMessageContent, RawMessage};
use serde_json::{Map, Value};

/// Reads and parses the next message on `conn` (signature verified).
pub async fn read<S: zeromq::SocketRecv>(conn: &mut Connection<S>) -> Result<JupyterMessage> {
    let raw = RawMessage::from_multipart(conn.socket.recv().await?, &conn.mac)?;
    let [header, parent, metadata, content] = [0, 1, 2, 3].map(|i| &raw.jparts[i]);
    let header: Header = serde_json::from_slice(header).context("message header")?;
    let mut content: Value = serde_json::from_slice(content).context("message content")?;
    fill_optional_fields(&header.msg_type, &mut content);
    let content = JupyterMessageContent::from_type_and_content(&header.msg_type, content).with_context(|| format!("parsing a {}", header.msg_type))?;
    Ok(JupyterMessage {
        zmq_identities: raw.zmq_identities.clone(),
        // An empty parent header (`{}`) is no header.
        parent_header: serde_json::from_slice(parent).ok(),
        metadata: serde_json::from_slice(metadata).context("message metadata")?,
        header,
        content,
        buffers: raw.jparts[4..].to_vec(),
        channel: None,
    })
}

/// Gives the fields the messaging spec makes optional their defaults, where the protocol
/// crate's types require them.
pub fn fill_optional_fields(msg_type: &str, content: &mut Value) {
    let Some(fields) = content.as_object_mut() else { return };
    if msg_type == "history_request" {
        let defaults: &[(&str, Value)] = match fields.get("hist_access_type").and_then(Value::as_str) {
            // No `n`: every match (the kernel's own reply treats i32::MAX as "all").
            Some("search") => &[("pattern", Value::from("*")), ("unique", Value::from(false)), ("n", Value::from(i32::MAX))],
            Some("tail") => &[("n", Value::from(10))],
            Some("range") => &[("start", Value::from(0)), ("stop", Value::from(0))],
            _ => &[],
        };
        insert_missing(fields, defaults);
        insert_missing(fields, &[("output", Value::from(false)), ("raw", Value::from(true))]);
    }
}

fn insert_missing(fields: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (name, value) in defaults {
        fields.entry(name.to_string()).or_insert_with(|| value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_search_without_n_or_unique_parses_after_filling() {
        let mut content = json!({"hist_access_type": "search", "pattern": "x*", "raw": true, "output": false});
        assert!(JupyterMessageContent::from_type_and_content("history_request", content.clone()).is_err(), "the protocol crate rejects it as sent");
        fill_optional_fields("history_request", &mut content);
        assert!(JupyterMessageContent::from_type_and_content("history_request", content.clone()).is_ok());
        assert_eq!((content["n"].clone(), content["unique"].clone(), content["pattern"].clone()), (json!(i32::MAX), json!(false), json!("x*")));
        let mut given = json!({"hist_access_type": "search", "pattern": "x*", "n": 3, "unique": true});
        fill_optional_fields("history_request", &mut given);
        assert_eq!((given["n"].clone(), given["unique"].clone()), (json!(3), json!(true)), "given fields are kept");
    }
}
