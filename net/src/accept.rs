//! The acceptor side of a new inbound connection: address validation (a stateless Retry to
//! an address that has not proven itself), the caps on admissions in progress, then its
//! TLS identity and hello are checked (the hello names this node, the certificate names the
//! claimed node, the node is allowed), then it is handed to the peer task of the claimed
//! node, which holds at most one waiting connection: further claims meanwhile are refused.
//!
//! Owns these admission checks. Never decides whether an admitted connection is kept (the
//! peer task does, by the pair rule in `peer.rs`) and never reads frames past the hello.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc::error::TrySendError;

use crate::admission::Slot;
use crate::conn::{read_frame, reject, CLOSE_NORMAL, CLOSE_PROTOCOL};
use crate::frame::{FrameKind, Hello, RejectReason};
use crate::peer;
use crate::shared::{to_secs, Ctx, Incoming};
use crate::tls::cert_names_node;
use crate::verify::LeafInfo;

/// Decides on a connection attempt at once (never waits): a Retry for an unvalidated
/// address, a refusal over the caps, else its admission runs on its own task.
pub(crate) fn on_incoming(ctx: &Arc<Ctx>, incoming: quinn::Incoming) {
    if ctx.cfg.address_validation && !incoming.remote_address_validated() && incoming.may_retry() {
        ctx.stats.retries.inc();
        // `may_retry` was checked just above, so this does not fail; were it to, the
        // attempt is dropped, which quinn treats as ignored.
        let _ = incoming.retry();
        return;
    }
    let Some(slot) = ctx.admissions.try_enter(incoming.remote_address()) else {
        ctx.stats.handshakes_refused.inc();
        incoming.refuse();
        return;
    };
    tokio::spawn(accept(ctx.clone(), incoming, slot));
}

/// Runs the acceptor side of a new connection up to the hello, then hands it to the peer
/// task of the claimed node. `_slot` holds the admission's place until then.
async fn accept(ctx: Arc<Ctx>, incoming: quinn::Incoming, _slot: Slot) {
    let timeout = ctx.cfg.connect_timeout;
    let Ok(Ok(conn)) = tokio::time::timeout(timeout, incoming).await else {
        ctx.stats.refused.inc();
        return;
    };
    let admitted = tokio::time::timeout(timeout, async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let f = read_frame(&mut recv, 64).await.ok()?;
        let hello = match f.kind {
            FrameKind::Hello => Hello::decode(&f.payload).ok()?,
            _ => return None,
        };
        let chain = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|b| *b)
            .unwrap_or_default();
        if hello.to != ctx.me {
            reject(&conn, &mut send, RejectReason::WrongTarget).await;
            return None;
        }
        if !cert_names_node(&chain, hello.from) {
            reject(&conn, &mut send, RejectReason::IdentityMismatch).await;
            return None;
        }
        // The handshake checked the list already; it may have changed since.
        if !ctx.policy.allows(hello.from) {
            ctx.policy.count_refusal();
            reject(&conn, &mut send, RejectReason::NotAllowed).await;
            return None;
        }
        let not_after = chain.first().and_then(|c| LeafInfo::parse(c)).map(|l| l.not_after);
        Some(Incoming { conn: conn.clone(), send, recv, hello, cert_not_after: to_secs(not_after) })
    })
    .await;
    match admitted {
        Ok(Some(inc)) => {
            let peer = peer::handle(&ctx, inc.hello.from);
            match peer.incoming.try_send(inc) {
                Ok(()) => {}
                Err(TrySendError::Full(mut inc)) => {
                    // Another connection claiming this node waits already: one at a time.
                    ctx.stats.claims_refused.inc();
                    reject(&inc.conn, &mut inc.send, RejectReason::Duplicate).await;
                }
                Err(TrySendError::Closed(inc)) => inc.conn.close(CLOSE_NORMAL.into(), b"shutting down"),
            }
        }
        _ => {
            ctx.stats.refused.inc();
            conn.close(CLOSE_PROTOCOL.into(), b"bad hello");
        }
    }
}
