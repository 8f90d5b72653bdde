//! The nodes' own events in a run's trace: every `info!` and above of the store, tagged with the
//! turmoil host it happened on and its simulated time. turmoil runs each host's tick inside a
//! span named `node` (field `name`), and every task a host spawns is polled inside it, so the
//! host of an event is the `node` span in its scope.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Events collected from the nodes of one run, as trace lines.
#[derive(Clone, Default)]
pub struct NodeEvents {
    lines: Arc<Mutex<Vec<String>>>,
}

impl NodeEvents {
    /// The lines collected so far, in the order the events happened.
    pub fn take(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|mut lines| std::mem::take(&mut *lines))
            .unwrap_or_default()
    }
}

/// The host name stored on a `node` span.
struct Host(String);

/// The fields of an event or span, rendered.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    name: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "name" => self.name = Some(format!("{value:?}").trim_matches('"').to_string()),
            other => {
                let _ = write!(self.rest, " {other}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "name" => self.name = Some(value.to_string()),
            other => {
                let _ = write!(self.rest, " {other}={value}");
            }
        }
    }
}

fn is_node_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.name() == "node"
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for NodeEvents {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        is_node_span(metadata)
            || (metadata.is_event()
                && metadata.target().starts_with("ringleader")
                && *metadata.level() <= Level::INFO)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if !is_node_span(attrs.metadata()) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(span), Some(name)) = (ctx.span(id), fields.name) {
            span.extensions_mut().insert(Host(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let host = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .from_root()
                    .find_map(|span| span.extensions().get::<Host>().map(|host| host.0.clone()))
            })
            .unwrap_or_else(|| "-".to_string());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis());
        let line = format!(
            "{now_ms:>8} ms  {host} {} {}{}",
            event.metadata().level(),
            fields.message,
            fields.rest
        );
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}
