//! Writes behind the server's back, straight into its database: what another tool, a hand
//! edit, a bug or a MongoDB-compatible server's quirk might leave there.

use super::TestServer;
use mongodb::bson::{doc, Bson, DateTime, Document};
use std::time::Duration;

/// A valid event time, for repairs.
const VALID_TIMESTAMP: i64 = 1_714_564_800_000;

enum Db {
    Mongo(mongodb::Database),
    Sqlite(rusqlite::Connection),
}

impl TestServer {
    async fn db(&self) -> Db {
        match &self.mongo_database {
            Some((uri, name)) => Db::Mongo(mongodb::Client::with_uri_str(uri).await.unwrap().database(name)),
            None => {
                let conn = rusqlite::Connection::open(self._dir.path().join("test.db")).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                Db::Sqlite(conn)
            }
        }
    }

    /// Changes a stored rule's `points` to `value`: a number, or text the store cannot read.
    pub async fn overwrite_rule_points(&self, event_type: &str, value: &str) {
        match self.db().await {
            Db::Mongo(db) => {
                let points = value.parse::<i64>().map(Bson::Int64).unwrap_or_else(|_| Bson::String(value.into()));
                let rules = db.collection::<Document>("scoringrules");
                let r = rules.update_one(doc! {"eventType": event_type}, doc! {"$set": {"points": points}}).await;
                assert_eq!(r.unwrap().matched_count, 1);
            }
            Db::Sqlite(conn) => {
                let value = match value.parse::<i64>() {
                    Ok(n) => rusqlite::types::Value::Integer(n),
                    Err(_) => rusqlite::types::Value::Text(value.to_string()),
                };
                let n =
                    conn.execute("UPDATE rules SET points = ?1 WHERE event_type = ?2", (value, event_type)).unwrap();
                assert_eq!(n, 1);
            }
        }
    }

    /// Queues an event at position `seq` whose timestamp the store cannot read.
    pub async fn insert_unreadable_event(&self, seq: i64, event_id: &str, lead_id: &str, event_type: &str) {
        match self.db().await {
            Db::Mongo(db) => {
                let event = doc! {
                    "_id": seq, "seq": seq, "eventId": event_id, "leadId": lead_id, "eventType": event_type,
                    "timestamp": "not a time", "metadata": Bson::Null, "receivedAt": DateTime::now(),
                    "processed": false, "points": Bson::Null,
                };
                db.collection::<Document>("events").insert_one(event).await.unwrap();
            }
            Db::Sqlite(conn) => {
                // Under the key the store's dedupe looks it up by.
                let key = leadscore::service::store::sqlite::event_keys::EventKeys::load_or_create(&conn)
                    .unwrap()
                    .of(event_id);
                conn.execute(
                    "INSERT INTO events (seq, event_key, event_id, lead_id, event_type, timestamp, received_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'not a time', ?6)",
                    (seq, key, event_id, lead_id, event_type, chrono::Utc::now().timestamp_millis()),
                )
                .unwrap();
            }
        }
    }

    /// Gives the event at `seq` a valid timestamp again.
    pub async fn repair_event(&self, seq: i64) {
        match self.db().await {
            Db::Mongo(db) => {
                let update = doc! {"$set": {"timestamp": DateTime::from_millis(VALID_TIMESTAMP)}};
                let r = db.collection::<Document>("events").update_one(doc! {"_id": seq}, update).await.unwrap();
                assert_eq!(r.matched_count, 1);
            }
            Db::Sqlite(conn) => {
                let n =
                    conn.execute("UPDATE events SET timestamp = ?1 WHERE seq = ?2", (VALID_TIMESTAMP, seq)).unwrap();
                assert_eq!(n, 1);
            }
        }
    }

    /// Stores a lead whose score is text, which no update can add to.
    pub async fn insert_broken_lead(&self, lead_id: &str) {
        match self.db().await {
            Db::Mongo(db) => {
                let lead = doc! {"_id": lead_id, "leadId": lead_id, "score": "not a number", "eventCount": 0_i64};
                db.collection::<Document>("leads").insert_one(lead).await.unwrap();
            }
            Db::Sqlite(conn) => {
                conn.execute(
                    "INSERT INTO leads (id, search_key, score, updated_at, event_count, created_at) \
                     VALUES (?1, ?1, 'not a number', 0, 0, 0)",
                    [lead_id],
                )
                .unwrap();
            }
        }
    }
}
