//! Lead profiles: the traits an `Identify` event carries (`metadata.traits`, as Segment's
//! `identify` sends them) kept on its lead, merged in ingest order (a later value of a trait
//! replaces an earlier one; `null` removes it). The leaderboard shows the name and company,
//! and search matches the email, name and company as well as the id.

use super::StoredEvent;
use serde_json::{Map, Value};

/// The event type whose `metadata.traits` update the lead's profile.
pub const IDENTIFY_EVENT_TYPE: &str = "Identify";
/// Most bytes a profile takes as JSON; traits that would grow it past this are not kept.
pub const MAX_PROFILE_BYTES: usize = 16 * 1024;

pub type Profile = Map<String, Value>;

/// The traits an event sets, if it is an `Identify` event with a `traits` object.
pub fn traits_of(event: &StoredEvent) -> Option<Profile> {
    if event.event_type != IDENTIFY_EVENT_TYPE {
        return None;
    }
    match serde_json::from_str::<Value>(event.metadata.as_deref()?).ok()? {
        Value::Object(mut meta) => match meta.remove("traits") {
            Some(Value::Object(traits)) => Some(traits),
            _ => None,
        },
        _ => None,
    }
}

/// `profile` with `traits` merged in. A trait whose new value would take the profile past
/// `MAX_PROFILE_BYTES` keeps its old value (or stays absent).
pub fn merged(mut profile: Profile, traits: &Profile) -> Profile {
    for (key, value) in traits {
        let before = profile.get(key).cloned();
        if value.is_null() {
            profile.remove(key);
            continue;
        }
        profile.insert(key.clone(), value.clone());
        if Value::Object(profile.clone()).to_string().len() > MAX_PROFILE_BYTES {
            match before {
                Some(old) => profile.insert(key.clone(), old),
                None => profile.remove(key),
            };
        }
    }
    profile
}

/// A profile stored as JSON text (`None` and anything unreadable read as empty).
pub fn parse(text: Option<&str>) -> Profile {
    match text.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(p))) => p,
        _ => Profile::new(),
    }
}

fn text(profile: &Profile, key: &str) -> Option<String> {
    match profile.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The person's name: `name`, else `firstName lastName`.
pub fn display_name(profile: &Profile) -> Option<String> {
    text(profile, "name").or_else(|| {
        let parts: Vec<String> = ["firstName", "lastName"].iter().filter_map(|k| text(profile, k)).collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    })
}

/// The company: `company` as text, or a company object's `name` (Segment's spec allows both).
pub fn company(profile: &Profile) -> Option<String> {
    match profile.get("company")? {
        Value::Object(c) => text(c, "name"),
        _ => text(profile, "company"),
    }
}

/// What search matches a lead by: its id, email, name and company, lowercased, one per line
/// (a needle never spans two of them: search text has no line breaks).
pub fn search_key(lead_id: &str, profile: &Profile) -> String {
    let mut key = lead_id.to_lowercase();
    for part in [text(profile, "email"), display_name(profile), company(profile)].into_iter().flatten() {
        key.push('\n');
        key.push_str(&part.to_lowercase());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, metadata: Value) -> StoredEvent {
        crate::domain::queued_event(event_type, "Lead-1", metadata)
    }

    fn object(v: Value) -> Profile {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_identify_events_carry_traits() {
        let traits = json!({"email": "ada@example.com"});
        assert_eq!(traits_of(&event("Identify", json!({"traits": traits}))), Some(object(traits.clone())));
        assert_eq!(traits_of(&event("Signed Up", json!({"traits": traits}))), None);
        assert_eq!(traits_of(&event("Identify", json!({"traits": "x"}))), None);
        assert_eq!(traits_of(&event("Identify", json!({}))), None);
    }

    #[test]
    fn later_traits_win_and_null_removes() {
        let p = merged(Profile::new(), &object(json!({"email": "a@x.io", "plan": "free", "name": "Ada"})));
        let p = merged(p, &object(json!({"plan": "pro", "name": null, "title": "CTO"})));
        assert_eq!(Value::Object(p), json!({"email": "a@x.io", "plan": "pro", "title": "CTO"}));
    }

    #[test]
    fn a_profile_never_grows_past_its_bound() {
        let big = "x".repeat(MAX_PROFILE_BYTES);
        let p = merged(object(json!({"email": "a@x.io"})), &object(json!({"blob": big, "name": "Ada"})));
        assert_eq!(Value::Object(p.clone()), json!({"email": "a@x.io", "name": "Ada"}));
        let p = merged(p, &object(json!({"email": big})));
        assert_eq!(p["email"], "a@x.io", "an oversized value keeps the old one");
    }

    #[test]
    fn names_companies_and_the_search_key() {
        let p = object(json!({"firstName": "Ada", "lastName": "Lovelace", "company": {"name": "Analytical"},
                              "email": "ADA@Example.com"}));
        assert_eq!(display_name(&p).as_deref(), Some("Ada Lovelace"));
        assert_eq!(company(&p).as_deref(), Some("Analytical"));
        assert_eq!(search_key("Lead-1", &p), "lead-1\nada@example.com\nada lovelace\nanalytical");
        let q = object(json!({"name": " Grace ", "company": "Navy", "email": 5}));
        assert_eq!((display_name(&q).as_deref(), company(&q).as_deref()), (Some("Grace"), Some("Navy")));
        assert_eq!(search_key("g", &Profile::new()), "g");
        assert_eq!(parse(Some("not json")), Profile::new());
    }
}
