//! Exports: every lead a leaderboard query matches, and a lead's whole history, as streams of
//! pages. One page is held at a time, so exporting a million leads costs what one page costs.

use super::stages::unknown_stage;
use super::{Service, ServiceResult};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::stages::{stage_for, StageChange};
use crate::domain::{HistoryEntry, Lead};
use futures::stream::{self, Stream};

/// Rows read from the store at a time.
pub const EXPORT_PAGE: usize = 2000;

impl Service {
    /// The leads `query` matches (all of them: its limit and offset are not used), in
    /// leaderboard order, each with its stage. A bad stage filter fails before anything is sent.
    pub async fn export_leads(&self, query: &LeadQuery) -> ServiceResult<impl Stream<Item = ServiceResult<Vec<Lead>>>> {
        let ladder = self.current_ladder().await?;
        let query = query.resolve_stage(&ladder).ok_or_else(|| unknown_stage(&ladder))?;
        let store = self.store.clone();
        // The state: where the next page starts; `None` once the last page is out.
        let start: Option<Option<(i64, String)>> = Some(None);
        Ok(stream::try_unfold(start, move |state| {
            let (store, query, ladder) = (store.clone(), query.clone(), ladder.clone());
            async move {
                let Some(after) = state else { return Ok(None) };
                let after = after.as_ref().map(|(score, id)| (*score, id.as_str()));
                let mut page = store.leads_after(&query, after, EXPORT_PAGE).await?;
                for lead in &mut page {
                    lead.stage = stage_for(&ladder, lead.score).to_string();
                }
                let next = match page.last() {
                    Some(last) if page.len() == EXPORT_PAGE => Some(Some((last.score, last.id.clone()))),
                    Some(_) => None,
                    None => return Ok(None),
                };
                Ok(Some((page, next)))
            }
        }))
    }

    /// A lead's whole history, newest first, with its stage moves. An unknown lead fails
    /// before anything is sent.
    pub async fn export_history(
        &self,
        lead_id: &str,
    ) -> ServiceResult<impl Stream<Item = ServiceResult<Vec<HistoryEntry>>>> {
        if self.store.lead(lead_id).await?.is_none() {
            return Err(self.missing_lead(lead_id).await);
        }
        let ladder = self.current_ladder().await?;
        let (store, lead_id) = (self.store.clone(), lead_id.to_string());
        Ok(stream::try_unfold(Some(0usize), move |offset| {
            let (store, lead_id, ladder) = (store.clone(), lead_id.clone(), ladder.clone());
            async move {
                let Some(offset) = offset else { return Ok(None) };
                let page = DetailPage { history_limit: EXPORT_PAGE, history_offset: offset, ..DetailPage::default() };
                let mut entries = store.history(&lead_id, &page).await?;
                if entries.is_empty() {
                    return Ok(None);
                }
                for entry in &mut entries {
                    entry.stage_change = StageChange::between(&ladder, entry.old_score, entry.new_score);
                }
                let next = (entries.len() == EXPORT_PAGE).then_some(offset + EXPORT_PAGE);
                Ok(Some((entries, next)))
            }
        }))
    }
}
