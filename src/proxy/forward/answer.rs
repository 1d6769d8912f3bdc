//! Which answer the client gets when attempts went to both regions: the last
//! one, unless a read that moved to the other region was told "not there
//! yet" (404, 410, 422: the replica may lag behind the primary), in which
//! case the first region's own answer wins.

use http::{Response, StatusCode};

use super::super::refusal::Refusal;
use crate::proxy::metrics::ProxyMetrics;
use crate::region::Region;

/// Statuses a read retried on the other region may answer when that region
/// merely lags behind.
fn lagging(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 410 | 422)
}

/// What one attempt ended with, when it did not end the request.
pub(crate) type Attempted<B> = Result<Response<B>, Refusal>;

/// The answers of a request's attempts, as far as they still matter.
pub(crate) struct Answers<B> {
    first: Region,
    /// The first region's answer, kept once an attempt went elsewhere.
    kept: Option<Attempted<B>>,
}

impl<B> Answers<B> {
    pub(crate) fn new(first: Region) -> Answers<B> {
        Answers { first, kept: None }
    }

    /// The last attempt's answer will not be relayed; the next attempt goes
    /// to `next`. The answer is kept when the request first leaves the
    /// first region (otherwise it is dropped: an errored response's
    /// connection closes, which is what a failing upstream deserves).
    pub(crate) fn retrying(&mut self, next: Region, answer: Attempted<B>) {
        if self.kept.is_none() && next != self.first {
            self.kept = Some(answer);
        }
    }

    /// The answer to relay, given the response `region` sent.
    #[inline(always)]
    pub(crate) fn finish(
        self,
        region: Region,
        resp: Response<B>,
    ) -> Result<(Response<B>, Region), Refusal> {
        if region != self.first && lagging(resp.status()) {
            match self.kept {
                Some(Ok(r)) => return Ok((r, self.first)),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok((resp, region))
    }

    /// No more attempts: relay `answer` (from `region`); a write whose
    /// outcome is unknown is marked so and counted.
    pub(crate) fn give_up(
        self,
        answer: Attempted<B>,
        outcome_unknown: bool,
        region: Region,
        metrics: &ProxyMetrics,
    ) -> Result<(Response<B>, Region), Refusal> {
        match answer {
            Ok(resp) => self.finish(region, resp),
            Err(Refusal::Error { error, .. }) => {
                if outcome_unknown {
                    metrics.outcome_unknown(region);
                }
                Err(Refusal::Error {
                    error,
                    outcome_unknown,
                })
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error::ProxyError;

    fn resp(status: u16, body: &'static str) -> Response<&'static str> {
        Response::builder().status(status).body(body).unwrap()
    }

    #[test]
    fn the_first_regions_answer_wins_over_a_lagging_one() {
        let mut a = Answers::new(Region::Primary);
        a.retrying(Region::Replica, Ok(resp(503, "primary")));
        let (r, region) = a.finish(Region::Replica, resp(404, "replica")).unwrap();
        assert_eq!(
            (r.status().as_u16(), *r.body(), region),
            (503, "primary", Region::Primary)
        );

        // Not lagging: the other region's answer is relayed.
        let mut a = Answers::new(Region::Primary);
        a.retrying(Region::Replica, Ok(resp(503, "primary")));
        let (r, region) = a.finish(Region::Replica, resp(200, "replica")).unwrap();
        assert_eq!((*r.body(), region), ("replica", Region::Replica));

        // The first region's error wins too.
        let mut a = Answers::new(Region::Primary);
        a.retrying(Region::Replica, Err(ProxyError::UpstreamConnect.into()));
        assert!(matches!(
            a.finish(Region::Replica, resp(410, "gone")),
            Err(Refusal::Error {
                error: ProxyError::UpstreamConnect,
                ..
            })
        ));
    }

    #[test]
    fn a_404_from_the_first_region_itself_is_relayed() {
        let mut a: Answers<&str> = Answers::new(Region::Primary);
        a.retrying(Region::Primary, Ok(resp(503, "first")));
        let (r, region) = a.finish(Region::Primary, resp(404, "again")).unwrap();
        assert_eq!((*r.body(), region), ("again", Region::Primary));
    }

    #[test]
    fn giving_up_on_an_unknown_outcome_marks_and_counts_it() {
        let registry = prometheus::Registry::new();
        let m = ProxyMetrics::register(&registry).unwrap();
        let a: Answers<&str> = Answers::new(Region::Replica);
        let got = a.give_up(
            Err(ProxyError::UpstreamReset.into()),
            true,
            Region::Replica,
            &m,
        );
        assert!(matches!(
            got,
            Err(Refusal::Error {
                outcome_unknown: true,
                ..
            })
        ));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("failway_outcome_unknown_total{region=\"replica\"} 1"),
            "{text}"
        );
    }
}
