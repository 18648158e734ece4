//! The WebSocket protocol state machines (graphql-transport-ws and the legacy
//! subscriptions-transport-ws), driven by sequences of client messages and
//! server-side outcomes. Invariants: every frame sent is a JSON object with a
//! `type`; no operation starts before the connection is acknowledged; no id
//! runs twice at once; nothing happens after a close.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use livegate::transport::ws::protocol::{Machine, Out, Proto};
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    // On a thread with the 2 MiB stack of the server's delivery threads.
    let data = data.to_vec();
    let run = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || drive(&data))
        .expect("thread");
    if let Err(e) = run.join() {
        std::panic::resume_unwind(e);
    }
});

fn drive(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let proto = if first & 1 == 0 {
        Proto::TransportWs
    } else {
        Proto::Legacy
    };
    let mut m = Machine::new(proto, 1 + usize::from(first >> 1) % 4, Default::default());
    let mut acked = false;
    let mut running: HashSet<String> = HashSet::new();
    for chunk in rest.split(|b| *b == 0) {
        let outs = match chunk.first() {
            Some(1) => m.accepted(),
            Some(2) => m.refused("no"),
            Some(3) | Some(4) | Some(5) => {
                let Some(id) = running.iter().next().cloned() else {
                    continue;
                };
                match chunk[0] {
                    3 => m.result(&id, json!({ "data": { "x": 1 } })),
                    4 => {
                        // A failed operation is over, like a finished one.
                        running.remove(&id);
                        m.failed(&id, vec![json!({ "message": "bad" })])
                    }
                    _ => {
                        running.remove(&id);
                        m.finished(&id)
                    }
                }
            }
            _ => m.on_text(&String::from_utf8_lossy(chunk)),
        };
        for out in outs {
            match out {
                Out::Send(text) => {
                    let v: Value = serde_json::from_str(&text).expect("a frame is JSON");
                    assert!(v["type"].is_string(), "a frame has a type: {text}");
                    if v["type"] == "connection_ack" {
                        acked = true;
                    }
                }
                Out::Close(code, _) => {
                    assert!((1000..5000).contains(&code), "close code {code}");
                    return;
                }
                Out::Authenticate(_) => {}
                Out::Start(id, _) => {
                    assert!(acked, "an operation started before the ack");
                    assert!(running.insert(id.clone()), "id {id} started twice");
                    assert!(m.is_active(&id));
                }
                Out::Stop(id) => {
                    running.remove(&id);
                }
            }
        }
    }
}
