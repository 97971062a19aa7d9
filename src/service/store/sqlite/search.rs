//! Lead search on the embedded store: a literal, case-insensitive substring of a lead's search
//! key (id, email, name, company). A needle of 3 characters or more is looked up in the trigram
//! index (`lead_search`, schema 9) instead of reading every lead; how the page is then found
//! depends on how many leads match:
//! - few (up to `FEW`): those leads are fetched by id and sorted by score;
//! - many: they are dense enough that walking the score order finds a page after reading
//!   about `page / share` leads, sooner than sorting them all.
//!
//! Shorter needles match so many leads that the walk is the quick way for them too.

use rusqlite::{params, Connection};

/// Up to this many matches, fetching and sorting them beats walking the score order.
pub const FEW: i64 = 10_000;

/// The condition on `leads` that keeps the matches of an indexed needle; bind `phrase`.
pub const IN_INDEX: &str =
    "id IN (SELECT lead_id FROM lead_search_ids WHERE doc IN (SELECT rowid FROM lead_search WHERE lead_search MATCH ?))";

/// The condition that reads each key instead; bind the needle.
pub const IN_KEY: &str = "instr(search_key, ?) > 0";

/// Brings the index up to date for `leads` (each new, changed or gone) at the end of the
/// transaction that wrote them: a few statements for the whole batch. Not a trigger, and not
/// a statement per lead: every write to the FTS5 table runs in a statement journal, whose
/// release costs time in proportion to the pages the transaction has dirtied, so doing it per
/// lead in a scoring transaction of thousands made scoring ten times slower.
pub fn reindex(c: &Connection, leads: &[&str]) -> rusqlite::Result<()> {
    if leads.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(leads).unwrap_or_default();
    const BATCH: &str = "SELECT value FROM json_each(?1)";
    for statement in [
        format!("DELETE FROM lead_search WHERE rowid IN (SELECT doc FROM lead_search_ids WHERE lead_id IN ({BATCH}))"),
        format!("DELETE FROM lead_search_ids WHERE lead_id IN ({BATCH})"),
        format!("INSERT INTO lead_search_ids (lead_id) SELECT id FROM leads WHERE id IN ({BATCH})"),
        format!(
            "INSERT INTO lead_search (rowid, search_key) SELECT i.doc, l.search_key \
             FROM lead_search_ids i JOIN leads l ON l.id = i.lead_id WHERE i.lead_id IN ({BATCH})"
        ),
    ] {
        c.prepare_cached(&statement)?.execute([&ids])?;
    }
    Ok(())
}

/// The index query for a needle: one phrase, which the trigram tokenizer matches as a
/// substring. `None` when the needle is too short for trigrams, or holds a NUL (FTS5's query
/// text ends there).
pub fn phrase(needle: &str) -> Option<String> {
    (needle.chars().count() >= 3 && !needle.contains('\0')).then(|| format!("\"{}\"", needle.replace('"', "\"\"")))
}

/// How many leads the index says match, counting no further than `cap`.
pub fn matches(c: &Connection, phrase: &str, cap: i64) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT count(*) FROM (SELECT rowid FROM lead_search WHERE lead_search MATCH ?1 LIMIT ?2)")?
        .query_row(params![phrase, cap], |r| r.get(0))
}

/// How to find a page of leads for `needle`: the condition and the value it binds.
pub fn page_filter(c: &Connection, needle: &str) -> rusqlite::Result<(&'static str, String)> {
    Ok(match phrase(needle) {
        Some(p) if matches(c, &p, FEW + 1)? <= FEW => (IN_INDEX, p),
        _ => (IN_KEY, needle.to_string()),
    })
}

/// How to count the leads matching `needle`: through the index when it can (in time with the
/// matches, not the leads), else by reading the keys.
pub fn count_filter(needle: &str) -> (&'static str, String) {
    match phrase(needle) {
        Some(p) => (IN_INDEX, p),
        None => (IN_KEY, needle.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::prepare_schema(&mut c).unwrap();
        c
    }

    fn add(c: &Connection, id: &str, key: &str, score: i64) {
        c.execute(
            "INSERT INTO leads (id, search_key, score, updated_at, created_at) VALUES (?1, ?2, ?3, 0, 0)",
            params![id, key, score],
        )
        .unwrap();
        reindex(c, &[id]).unwrap();
    }

    /// The leads matching `needle` through the index, and by reading every key.
    fn both_ways(c: &Connection, needle: &str) -> (Vec<String>, Vec<String>) {
        let ids = |condition: &str, value: String| -> Vec<String> {
            let sql = format!("SELECT id FROM leads WHERE {condition} ORDER BY score DESC, id");
            c.prepare(&sql).unwrap().query_map([value], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        (ids(IN_INDEX, phrase(needle).unwrap()), ids(IN_KEY, needle.to_string()))
    }

    #[test]
    fn the_index_finds_what_reading_the_keys_finds_through_inserts_updates_and_deletes() {
        let c = store();
        add(&c, "a", "a ann@acme.com ann lee acme", 5);
        add(&c, "b", "b bob@initech.io bob", 9);
        add(&c, "c", "c carol@acme.com carol \"q\" ümlaut", 1);
        add(&c, "d", "d ſtraße σοφία", 2);
        // Characters the tokenizer would fold together (ſ and s, ς and σ) stay apart: keys and
        // needles are lowercased already, so the index compares exactly, as instr() does.
        for needle in ["acme", "ann", "@", "nitech", "\"q\"", "ümla", "zzz", "com car", "str", "ſtr", "σοφ", "ςοφ"]
        {
            if phrase(needle).is_some() {
                let (indexed, read) = both_ways(&c, needle);
                assert_eq!(indexed, read, "{needle:?}");
            }
        }
        assert_eq!(both_ways(&c, "acme").0, ["a", "c"]);
        // A profile changes the key; a merged lead goes.
        c.execute("UPDATE leads SET search_key = 'b bob@acme.com bob' WHERE id = 'b'", []).unwrap();
        c.execute("UPDATE leads SET score = 7 WHERE id = 'a'", []).unwrap();
        c.execute("DELETE FROM leads WHERE id = 'c'", []).unwrap();
        reindex(&c, &["b", "c", "b"]).unwrap();
        assert_eq!(both_ways(&c, "acme"), (vec!["b".into(), "a".into()], vec!["b".into(), "a".into()]));
        assert!(both_ways(&c, "initech").0.is_empty(), "the old key is gone from the index");
        assert_eq!(matches(&c, &phrase("acme").unwrap(), 100).unwrap(), 2);
        assert_eq!(matches(&c, &phrase("acme").unwrap(), 1).unwrap(), 1, "counting stops at the cap");
    }

    #[test]
    fn many_matches_walk_the_score_order_and_few_or_short_ones_use_what_suits_them() {
        let mut c = store();
        let tx = c.transaction().unwrap();
        for i in 0..=FEW {
            add(&tx, &format!("lead-{i}"), &format!("lead-{i} x{i}@acme.com"), i % 100);
        }
        add(&tx, "rare", "rare someone@initech.io", 3);
        tx.commit().unwrap();
        assert_eq!(page_filter(&c, "acme").unwrap().0, IN_KEY, "dense: the walk finds a page at once");
        assert_eq!(page_filter(&c, "initech").unwrap(), (IN_INDEX, "\"initech\"".to_string()));
        assert_eq!(page_filter(&c, "x1").unwrap().0, IN_KEY, "too short for the index");
        assert_eq!(count_filter("acme").0, IN_INDEX, "counted through the index however many match");
    }

    #[test]
    fn few_matches_are_fetched_by_id_not_by_reading_every_lead() {
        let c = store();
        let sql = format!("EXPLAIN QUERY PLAN SELECT id FROM leads WHERE {IN_INDEX} ORDER BY score DESC, id LIMIT 50");
        let plan: Vec<String> =
            c.prepare(&sql).unwrap().query_map(["\"acme\""], |r| r.get(3)).unwrap().map(Result::unwrap).collect();
        let plan = plan.join("\n");
        assert!(plan.contains("VIRTUAL TABLE INDEX"), "{plan}");
        assert!(!plan.lines().any(|l| l.starts_with("SCAN leads")), "no walk of every lead:\n{plan}");
    }

    #[test]
    fn short_needles_are_not_looked_up_and_quotes_are_doubled() {
        assert_eq!(phrase("ab"), None);
        assert_eq!(phrase("ann"), Some("\"ann\"".into()));
        assert_eq!(phrase("a\"b"), Some("\"a\"\"b\"".into()));
        assert_eq!(phrase("éüß"), Some("\"éüß\"".into()), "characters, not bytes");
        assert_eq!(phrase("ab\0c"), None, "read instead: FTS5 would stop at the NUL");
    }
}
