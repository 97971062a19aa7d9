//! Scoring rules on MongoDB, in the old app's `scoringrules` collection.
//!
//! A rule's id is its `_id` as text (an ObjectId's hex, for the old app's documents too).
//! The type's base rule, the one the old `POST /api/rules` upserts, carries `baseOf: <event
//! type>` under a unique sparse index, so two instances can never create two base rules of
//! one type. Other rules have no `baseOf` at all (a sparse index still indexes `null`).
//! Documents the old app (or an earlier release) wrote have no `name`: on start they become
//! their type's base rule (`backfill`).

use super::docs::{boolean, field, int, millis};
use super::{classify, is_duplicate, MongoStore, DUPLICATE_KEY};
use crate::domain::conditions::parse_conditions;
use crate::domain::limits::parse_limit;
use crate::domain::time::Millis;
use crate::domain::{Rule, RuleDraft, RuleInput};
use crate::service::store::{StoreError, StoreResult};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::IndexModel;

/// The index that keeps one base rule per event type.
pub fn index() -> (&'static str, IndexModel) {
    let options = IndexOptions::builder().name("base_rule_by_type".to_string()).unique(true).sparse(true).build();
    ("scoringrules", IndexModel::builder().keys(doc! {"baseOf": 1}).options(options).build())
}

/// The filter for a rule id: an ObjectId's hex names that ObjectId; other ids are strings.
pub fn by_id(id: &str) -> Document {
    match ObjectId::parse_str(id) {
        Ok(oid) => doc! {"_id": oid},
        Err(_) => doc! {"_id": id},
    }
}

/// The base rule's update: points and state change, nothing else.
pub fn update_base(r: &RuleInput, now: Millis) -> (Document, Document) {
    (
        doc! {"baseOf": &r.event_type},
        doc! {"$set": {"points": r.points, "isActive": r.is_active, "updatedAt": DateTime::from_millis(now)}},
    )
}

/// A new base rule's document.
pub fn new_base(r: &RuleInput, now: Millis) -> Document {
    let rule = Rule::from_draft(String::new(), base_draft(r), true, now);
    let mut d = doc! {"_id": ObjectId::new(), "baseOf": &r.event_type, "createdAt": DateTime::from_millis(now)};
    d.extend(fields(&rule));
    d
}

/// A rule's fields as stored (all but `_id` and `baseOf`).
pub fn fields(rule: &Rule) -> Document {
    let conditions = serde_json::to_value(&rule.conditions).ok().and_then(|v| Bson::try_from(v).ok());
    doc! {
        "name": &rule.name,
        "eventType": &rule.event_type,
        "points": rule.points,
        "isActive": rule.is_active,
        "conditions": conditions.unwrap_or_else(|| Bson::Array(Vec::new())),
        "limit": rule.limit.map(|l| doc! {"count": i64::from(l.count), "per": l.per.as_str()}),
        "updatedAt": DateTime::from_millis(rule.updated_at),
    }
}

/// The update a `PUT` makes: every field, and the base mark kept or dropped.
pub fn replace_fields(rule: &Rule) -> Document {
    if rule.base {
        doc! {"$set": fields(rule)}
    } else {
        doc! {"$set": fields(rule), "$unset": {"baseOf": ""}}
    }
}

/// A rule document as a rule; `Err` says what does not read (a hand edit, say): the caller
/// fails rather than score with a rule it cannot read.
pub fn rule(d: &Document) -> Result<Rule, String> {
    let id = match d.get("_id") {
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return Err("no _id".into()),
    };
    let why = |what: &str| format!("rule {id}: unreadable {what}: {d}");
    let event_type: String = field(d, "eventType").ok_or_else(|| why("eventType"))?;
    let conditions = match d.get("conditions") {
        None | Some(Bson::Null) => Vec::new(),
        Some(c) => parse_conditions(Some(&c.clone().into_relaxed_extjson())).map_err(|_| why("conditions"))?,
    };
    let limit = match d.get("limit") {
        None | Some(Bson::Null) => None,
        Some(l) => parse_limit(Some(&l.clone().into_relaxed_extjson())).map_err(|_| why("limit"))?,
    };
    Ok(Rule {
        name: field(d, "name").unwrap_or_else(|| event_type.clone()),
        points: int(d.get("points")).ok_or_else(|| why("points"))?,
        // A rule without the flag is active, as the old app's schema defaulted it.
        is_active: boolean(d.get("isActive")).unwrap_or(true),
        conditions,
        limit,
        base: d.get("baseOf").is_some_and(|b| !matches!(b, Bson::Null)),
        updated_at: millis(d.get("updatedAt")).unwrap_or(0),
        event_type,
        id,
    })
}

fn read(d: Option<Document>) -> StoreResult<Option<Rule>> {
    d.as_ref().map(rule).transpose().map_err(StoreError::Internal)
}

impl MongoStore {
    pub(super) async fn list_rules(&self) -> StoreResult<Vec<Rule>> {
        let found: Vec<Document> =
            self.rules.find(doc! {}).await.map_err(classify)?.try_collect().await.map_err(classify)?;
        let mut rules: Vec<(Rule, Millis)> = found
            .iter()
            .map(|d| rule(d).map(|r| (r, created_at(d).unwrap_or(0))))
            .collect::<Result<_, _>>()
            .map_err(StoreError::Internal)?;
        // Sorted here: by type, base first, then oldest (what every compatible server sorts alike).
        rules.sort_by(|(a, ca), (b, cb)| (&a.event_type, !a.base, ca, &a.id).cmp(&(&b.event_type, !b.base, cb, &b.id)));
        Ok(rules.into_iter().map(|(r, _)| r).collect())
    }

    /// Update, else insert: not an upsert with `$setOnInsert`, which not every compatible
    /// server has (the stand-in ignores it). Two instances inserting at once: the loser hits
    /// the unique index, and its next round updates the winner's rule.
    pub(super) async fn upsert_base_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule> {
        let (filter, update) = update_base(&rule, now);
        for _ in 0..3 {
            let updated = self
                .rules
                .find_one_and_update(filter.clone(), update.clone())
                .return_document(ReturnDocument::After)
                .await
                .map_err(classify)?;
            if let Some(saved) = read(updated)? {
                return Ok(saved);
            }
            let new = new_base(&rule, now);
            match self.rules.insert_one(new.clone()).await {
                Ok(_) => return read(Some(new))?.ok_or_else(|| StoreError::Internal("rule missing".into())),
                Err(e) if is_duplicate(&e) => continue,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Unavailable("the base rule changed under this write; retry".into()))
    }

    pub(super) async fn create_rule_doc(&self, draft: RuleDraft, now: Millis) -> StoreResult<Rule> {
        let oid = ObjectId::new();
        let rule = Rule::from_draft(oid.to_hex(), draft, false, now);
        let mut d = doc! {"_id": oid, "createdAt": DateTime::from_millis(now)};
        d.extend(fields(&rule));
        self.rules.insert_one(d).await.map_err(classify)?;
        Ok(rule)
    }

    pub(super) async fn update_rule_doc(&self, id: &str, draft: RuleDraft, now: Millis) -> StoreResult<Option<Rule>> {
        let Some(old) = read(self.rules.find_one(by_id(id)).await.map_err(classify)?)? else { return Ok(None) };
        let base = old.stays_base(&draft);
        let rule = Rule::from_draft(old.id, draft, base, now);
        let saved = self
            .rules
            .find_one_and_update(by_id(id), replace_fields(&rule))
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?;
        read(saved)
    }

    pub(super) async fn delete_rule_doc(&self, id: &str) -> StoreResult<Option<Rule>> {
        read(self.rules.find_one_and_delete(by_id(id)).await.map_err(classify)?)
    }

    pub(super) async fn seed_rule_docs(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool> {
        if self.rules.count_documents(doc! {}).await.map_err(classify)? > 0 {
            return Ok(false);
        }
        let docs: Vec<Document> = defaults.iter().map(|r| new_base(r, now)).collect();
        match self.rules.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(true),
            // Another instance seeded at the same moment: its rules stand.
            Err(err)
                if matches!(err.kind.as_ref(), ErrorKind::InsertMany(f)
                if f.write_errors.as_ref().is_some_and(|w| w.iter().all(|w| w.code == DUPLICATE_KEY))) =>
            {
                Ok(false)
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Drops the index that kept one rule per event type (earlier releases named it
    /// `eventType_unique`, the old app's Mongoose `eventType_1`): found by its key, not its
    /// name, since compatible servers may name indexes their own way (the stand-in does).
    async fn drop_one_rule_per_type_index(&self) -> StoreResult<()> {
        let indexes: Vec<IndexModel> =
            self.rules.list_indexes().await.map_err(classify)?.try_collect().await.map_err(classify)?;
        for index in indexes {
            let keys: Vec<&str> = index.keys.keys().map(String::as_str).collect();
            let name = index.options.as_ref().and_then(|o| o.name.clone());
            if let (["eventType"], Some(name)) = (keys.as_slice(), name) {
                self.rules.drop_index(name.as_str()).await.map_err(classify)?;
                tracing::info!(index = %name, "mongodb: dropped the one-rule-per-event-type index");
            }
        }
        Ok(())
    }

    /// Documents without a `name` (the old app's, an earlier release's) become their type's
    /// base rule. Idempotent; there are only ever a handful.
    pub(super) async fn backfill_rules(&self) -> StoreResult<()> {
        self.drop_one_rule_per_type_index().await?;
        let old: Vec<Document> = self
            .rules
            .find(doc! {"name": {"$exists": false}})
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)?;
        for d in old {
            let (Some(id), Some(event_type)) = (d.get("_id").cloned(), field(&d, "eventType")) else {
                continue;
            };
            tracing::info!(%event_type, "mongodb: rule becomes its type's base rule");
            let update = doc! {"$set": {"name": &event_type, "baseOf": &event_type}};
            match self.rules.update_one(doc! {"_id": id.clone()}, update).await {
                Ok(_) => {}
                // The type has a base rule already (an older release wrote a second rule for
                // it while this one ran): this one becomes an ordinary rule.
                Err(e) if is_duplicate(&e) => {
                    tracing::warn!(%event_type, "mongodb: a second old rule for this type becomes an ordinary rule");
                    let named = doc! {"$set": {"name": &event_type}};
                    self.rules.update_one(doc! {"_id": id}, named).await.map_err(classify)?;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }
}

fn base_draft(r: &RuleInput) -> RuleDraft {
    RuleDraft {
        name: None,
        event_type: r.event_type.clone(),
        points: r.points,
        is_active: r.is_active,
        conditions: Vec::new(),
        limit: None,
        legacy: true,
    }
}

fn created_at(d: &Document) -> Option<Millis> {
    millis(d.get("createdAt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conditions::parse_conditions;
    use crate::domain::limits::{Limit, Per};
    use serde_json::json;

    #[test]
    fn a_rule_round_trips_through_its_document() {
        let rule = Rule {
            id: ObjectId::new().to_hex(),
            name: "Pricing page".into(),
            event_type: "Page View".into(),
            points: 20,
            is_active: true,
            conditions: parse_conditions(Some(&json!([{"field": "page", "op": "in", "value": ["/pricing", 3]}])))
                .unwrap(),
            limit: Some(Limit { count: 2, per: Per::Week }),
            base: false,
            updated_at: 5_000,
        };
        let mut d = by_id(&rule.id);
        d.extend(fields(&rule));
        assert_eq!(super::rule(&d).unwrap(), rule);
        assert!(d.get("baseOf").is_none(), "only base rules carry the mark (a sparse index indexes null)");
    }

    #[test]
    fn the_old_apps_documents_read_as_rules() {
        let oid = ObjectId::new();
        let d = doc! {"_id": oid, "eventType": "Webinar", "points": 15_i32, "__v": 0};
        let r = rule(&d).unwrap();
        assert_eq!((r.id, r.name.as_str(), r.points, r.is_active), (oid.to_hex(), "Webinar", 15, true));
        assert!(r.conditions.is_empty() && r.limit.is_none());
        let bad = doc! {"_id": oid, "eventType": "Webinar", "points": 1, "conditions": [{"field": "x", "op": "near"}]};
        assert!(rule(&bad).unwrap_err().contains("conditions"), "a rule that does not read is an error, not ignored");
    }

    #[test]
    fn ids_name_object_ids_or_strings() {
        let oid = ObjectId::new();
        assert_eq!(by_id(&oid.to_hex()), doc! {"_id": oid});
        assert_eq!(by_id("custom-1"), doc! {"_id": "custom-1"});
    }

    #[test]
    fn a_base_rule_is_found_by_its_type_and_changes_only_points_and_state() {
        let input = RuleInput { event_type: "Webinar".into(), points: -5, is_active: false };
        let (filter, update) = update_base(&input, 3_000);
        assert_eq!(filter, doc! {"baseOf": "Webinar"});
        assert_eq!(
            update.get_document("$set").unwrap().keys().collect::<Vec<_>>(),
            ["points", "isActive", "updatedAt"]
        );
        let new = rule(&new_base(&input, 3_000)).unwrap();
        assert_eq!((new.name.as_str(), new.points, new.is_active, new.base), ("Webinar", -5, false, true));
    }
}
