//! The acceptor side of a new inbound connection: its TLS identity and hello are checked
//! (the hello names this node, the certificate names the claimed node), then it is handed
//! to the peer task of the claimed node.
//!
//! Owns these admission checks. Never decides whether an admitted connection is kept (the
//! peer task does, by the pair rule in `peer.rs`) and never reads frames past the hello.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::conn::{read_frame, reject, CLOSE_NORMAL, CLOSE_PROTOCOL};
use crate::frame::{FrameKind, Hello, RejectReason};
use crate::peer;
use crate::shared::{Ctx, Incoming};
use crate::tls::cert_names_node;

/// Runs the acceptor side of a new connection up to the hello, then hands it to the peer
/// task of the claimed node.
pub(crate) async fn accept(ctx: Arc<Ctx>, incoming: quinn::Incoming) {
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
        Some(Incoming { conn: conn.clone(), send, recv, hello })
    })
    .await;
    match admitted {
        Ok(Some(inc)) => {
            let peer = peer::handle(&ctx, inc.hello.from);
            if let Err(e) = peer.incoming.send(inc).await {
                e.0.conn.close(CLOSE_NORMAL.into(), b"shutting down");
            }
        }
        _ => {
            ctx.stats.refused.inc();
            conn.close(CLOSE_PROTOCOL.into(), b"bad hello");
        }
    }
}
