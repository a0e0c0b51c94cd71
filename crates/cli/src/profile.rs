//! `niyet profile show <identifier>`: one customer's profile from a running server.

use clap::{Args, Subcommand};
use serde_json::Value;

/// `niyet profile …`
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Show the profile an identifier belongs to, with its identity and latest events.
    ///
    /// IDENTIFIER is `TYPE:VALUE` (`email:ayse@example.com`, `user_id:42`,
    /// `anonymous_id:…`, `phone:+905321234567`, `device_id:…`, an external id type), a
    /// profile id (`p_12`), or a bare value: an e-mail if it has `@`, a phone number if it
    /// starts with `+`, else a user id.
    Show(ShowArgs),
}

/// Arguments of `niyet profile show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The identifier.
    identifier: String,
    #[command(flatten)]
    admin: crate::keys::Admin,
    /// Print the raw JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Latest events to show.
    #[arg(long, default_value_t = 10)]
    events: usize,
}

/// Splits an identifier argument into an API query.
pub fn query_for(identifier: &str) -> (String, Option<String>) {
    if identifier.starts_with("p_") && identifier[2..].chars().all(|c| c.is_ascii_digit()) {
        return (identifier.to_string(), None);
    }
    if let Some((k, v)) = identifier.split_once(':') {
        let word = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if word && !v.is_empty() {
            return (k.to_string(), Some(v.to_string()));
        }
    }
    let kind = if identifier.contains('@') {
        "email"
    } else if identifier.starts_with('+') {
        "phone"
    } else {
        "user_id"
    };
    (kind.to_string(), Some(identifier.to_string()))
}

/// Runs `niyet profile`.
pub async fn run(cmd: ProfileCommand) -> anyhow::Result<()> {
    let ProfileCommand::Show(a) = cmd;
    let id = crate::keys::profile_of(&a.admin, &a.identifier).await?;
    let (get, base) = (reqwest::Method::GET, format!("/v1/profiles/{id}"));
    let profile = a.admin.call(get.clone(), &base, None).await?;
    let identity = a
        .admin
        .call(get.clone(), &format!("{base}/identity"), None)
        .await?;
    let limit = a.events.clamp(1, 1000);
    let events = a
        .admin
        .call(get, &format!("{base}/events?limit={limit}"), None)
        .await?;
    if a.json {
        let all = serde_json::json!({"profile": profile, "identity": identity, "events": events});
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print!("{}", summary(&profile, &identity, &events));
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A readable summary of a profile.
pub fn summary(p: &Value, identity: &Value, events: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "Profile {}", s(&p["id"]));
    let _ = writeln!(
        o,
        "  seen        {} → {}  ({} events)",
        s(&p["first_seen"]),
        s(&p["last_seen"]),
        s(&p["event_count"])
    );
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let _ = writeln!(o, "  channels    {}", list(&p["channels"]));
    let _ = writeln!(o, "  devices     {}", list(&p["devices"]));
    let pu = &p["purchases"];
    let _ = writeln!(
        o,
        "  purchases   {} orders, revenue {}, average basket {}, last order {}, {} refunds",
        s(&pu["orders"]),
        s(&pu["revenue"]),
        s(&pu["average_basket"]),
        s(&pu["last_order"]),
        s(&pu["refunds"])
    );
    let _ = writeln!(o, "Identifiers");
    for i in identity["identifiers"].as_array().into_iter().flatten() {
        let merges = i["via_merges"].as_array().map(|a| a.len()).unwrap_or(0);
        let _ = writeln!(
            o,
            "  {:<14} {:<32} {} (offset {}{})",
            s(&i["identifier"]["type"]),
            s(&i["identifier"]["value"]),
            s(&i["how"]),
            s(&i["offset"]),
            if merges > 0 {
                format!(
                    ", came with profile {} through {merges} merge(s)",
                    s(&i["joined_profile"])
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(t) = p["traits"].as_object() {
        let _ = writeln!(o, "Traits");
        for (k, v) in t {
            let _ = writeln!(
                o,
                "  {k:<14} {}  ({}, {})",
                v["value"],
                s(&v["time"]),
                s(&v["source"])
            );
        }
    }
    if let Some(c) = p["event_counts"].as_object() {
        let _ = writeln!(o, "Event counts");
        for (k, v) in c {
            let _ = writeln!(o, "  {k:<24} {v}");
        }
    }
    let _ = writeln!(o, "History (newest first)");
    for e in events["entries"].as_array().into_iter().flatten() {
        let what = if e["type"] == "event" {
            let ev = &e["event"];
            let name = ev["event"].as_str().or(ev["name"].as_str()).unwrap_or("");
            format!("{} {}  {}", s(&ev["type"]), name, s(&ev["timestamp"]))
        } else {
            let detail = e["rule"].as_str().unwrap_or("");
            format!("{}  {}", s(&e["type"]), detail)
        };
        let _ = writeln!(o, "  #{:<8} {what}", s(&e["offset"]));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_arguments() {
        assert_eq!(query_for("p_12"), ("p_12".into(), None));
        assert_eq!(
            query_for("email:A@b.tr"),
            ("email".into(), Some("A@b.tr".into()))
        );
        assert_eq!(query_for("a@b.tr"), ("email".into(), Some("a@b.tr".into())));
        assert_eq!(
            query_for("+905321234567"),
            ("phone".into(), Some("+905321234567".into()))
        );
        assert_eq!(query_for("42"), ("user_id".into(), Some("42".into())));
        assert_eq!(
            query_for("crm_id:C-9"),
            ("crm_id".into(), Some("C-9".into()))
        );
    }
}
