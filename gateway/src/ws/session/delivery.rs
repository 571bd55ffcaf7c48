//! What a session writes: stored notifications replayed from the inbox, and queued ones
//! in vectored batches; the client core decides what passes and accounts for it.

use kurir_wire::WireFrame;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Interrupt, Session};
use crate::hub::{Outbound, Queued};
use crate::protocol::CloseReason;

/// Frames written per vectored write at most (coalescing under load).
const WRITE_BATCH: usize = 64;

impl WireFrame for Outbound {
    fn wire(&self) -> &[u8] {
        &self.frame
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Deliver the pending stored notifications after the resume cursor, oldest first,
    /// skipping what this connection already has.
    pub(super) async fn replay(&mut self) -> Result<(), CloseReason> {
        let mut replay = self.client.replay();
        loop {
            let page = self.client.next_page(&mut replay).await?;
            if page.is_empty() {
                return Ok(());
            }
            for r in page {
                self.send(r.frame).await?;
                self.client.replayed(r.id);
            }
        }
    }

    /// Write `first` and whatever else is queued, up to [`WRITE_BATCH`], in one vectored
    /// write.
    pub(super) async fn write_batch(&mut self, first: Queued) -> Result<(), CloseReason> {
        let batch = self.client.batch(first, WRITE_BATCH);
        if batch.is_empty() {
            return Ok(());
        }
        self.write(&batch, Interrupt::OnClose).await?;
        self.client.delivered(batch.iter());
        Ok(())
    }
}
