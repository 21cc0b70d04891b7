use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::super::tests::text;
use super::super::{CancelReason, Input, Output, Protocol, Queued, Wire};
use super::encode::{reply_text, tokens};
use super::session::{merge, set_path};

#[test]
fn realtime_session_update_ga_and_beta() {
    let mut o = Wire::new(Protocol::OpenAi);
    let greeting = text(&o.greeting()[0]);
    assert_eq!(greeting["type"], "session.created");
    let ga = json!({"type": "session.update", "session": {"type": "realtime", "audio":
        {"input": {"turn_detection": null, "format": {"type": "audio/pcm", "rate": 16000}}}}});
    let inputs = o.decode(&Message::text(ga.to_string()), true);
    assert_eq!(inputs[0], Input::ManualTurns(true));
    assert_eq!(inputs[1], Input::Rate(16000));
    let Input::Reply(reply) = &inputs[2] else {
        panic!("{inputs:?}")
    };
    let v = text(reply);
    assert_eq!(v["type"], "session.updated");
    assert!(v["session"]["audio"]["input"]["turn_detection"].is_null());
    assert_eq!(v["session"]["audio"]["output"]["format"]["rate"], 16000);
    assert_ne!(v["event_id"], greeting["event_id"]);

    let beta = json!({"type": "session.update", "session": {"input_audio_format": "pcm16",
        "turn_detection": {"type": "server_vad"}}});
    let inputs = o.decode(&Message::text(beta.to_string()), true);
    assert_eq!(inputs[0], Input::ManualTurns(false));
    assert_eq!(inputs[1], Input::Rate(24000));

    // A rate change mid-turn is refused and changes nothing.
    let busy = o.decode(&Message::text(ga.to_string()), false);
    let [Input::Reply(e)] = &busy[..] else {
        panic!("{busy:?}")
    };
    assert_eq!(text(e)["error"]["code"], "session_busy");

    let unknown = o.decode(&Message::text(r#"{"type":"bogus"}"#), true);
    let [Input::Reply(e)] = &unknown[..] else {
        panic!("{unknown:?}")
    };
    assert_eq!(text(e)["error"]["code"], "unknown_event");
}

#[test]
fn realtime_response_lifecycle_and_usage() {
    let mut o = Wire::new(Protocol::OpenAi);
    o.encode(Output::Committed);
    o.encode(Output::Transcript("please book a table for two"));
    let start = o.encode(Output::ResponseStart {
        duration: Duration::from_millis(40),
    });
    let kinds: Vec<Value> = start.iter().map(|m| text(m)["type"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_item.added",
            "response.output_audio_transcript.delta"
        ]
    );
    // 24 kHz: 40 ms = 1920 bytes; send half of it, then cancel.
    let delta = o.encode(Output::Audio(&[0u8; 960]));
    assert_eq!(text(&delta[0])["type"], "response.output_audio.delta");
    o.encode(Output::Metrics(json!({"type": "metrics", "asr_ms": 50.0})));
    let done = o.encode(Output::Cancelled {
        reason: CancelReason::Client,
        queued: Queued::Nothing,
    });
    assert_eq!(
        done.len(),
        1,
        "nothing queued: no output_audio_buffer.cleared"
    );
    let v = text(&done[0]);
    assert_eq!(v["type"], "response.done");
    assert_eq!(v["response"]["status"], "cancelled");
    assert_eq!(
        v["response"]["status_details"]["reason"],
        "client_cancelled"
    );
    assert_eq!(v["response"]["metadata"]["asr_ms"], 50.0);
    assert_eq!(v["response"]["usage"]["input_tokens"], 7);
    let out = v["response"]["usage"]["output_tokens"].as_u64().unwrap();
    assert!(out >= 1, "{v}");
    // Nothing in progress now: the next output opens a fresh response.
    let again = o.encode(Output::ResponseStart {
        duration: Duration::from_secs(1),
    });
    assert_eq!(text(&again[0])["type"], "response.created");
    assert_ne!(
        text(&again[0])["response"]["id"],
        v["response"]["id"],
        "fresh id"
    );
}

#[test]
fn merge_and_set_path() {
    let mut v = json!({"a": {"b": 1, "c": 2}});
    merge(&mut v, &json!({"a": {"b": null, "d": 3}}));
    assert_eq!(v, json!({"a": {"b": null, "c": 2, "d": 3}}));
    set_path(&mut v, &["x", "y"], json!(5));
    assert_eq!(v["x"]["y"], 5);
    assert_eq!(tokens(""), 1);
    assert_eq!(reply_text(Duration::from_millis(800)), "sure I.");
}

#[test]
fn a_strict_tool_call_ends_the_response_and_takes_only_its_own_call_id() {
    let mut o = Wire::new(Protocol::OpenAi);
    let msgs = o.encode(Output::ToolCall {
        name: "lookup",
        arguments: "{}".into(),
        awaits_result: true,
    });
    let events: Vec<Value> = msgs.iter().map(text).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.done"
        ]
    );
    let call_id = events[2]["call_id"].as_str().unwrap().to_string();
    assert_eq!(
        events[3]["response"]["output"][0]["call_id"],
        call_id.as_str()
    );
    let output = |id: &str| {
        let item = json!({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": id, "output": "{}"}});
        o_decode(&item)
    };
    fn o_decode(v: &Value) -> Message {
        Message::text(v.to_string())
    }
    // Another call's id is refused with an error; the right one is the tool result.
    let wrong = o.decode(&output("call_nope"), false);
    let [Input::Reply(e)] = &wrong[..] else {
        panic!("{wrong:?}")
    };
    assert_eq!(text(e)["error"]["code"], "invalid_call_id");
    let right = o.decode(&output(&call_id), false);
    assert_eq!(right.len(), 2, "{right:?}");
    let Input::Reply(ack) = &right[0] else {
        panic!("{right:?}")
    };
    assert_eq!(text(ack)["type"], "conversation.item.created");
    assert_eq!(text(ack)["item"]["call_id"], call_id.as_str());
    assert_eq!(right[1], Input::ToolResult);
    // The next response is a new one.
    let next = o.encode(Output::ResponseStart {
        duration: Duration::from_millis(100),
    });
    assert_eq!(text(&next[0])["type"], "response.created");
    assert_ne!(
        text(&next[0])["response"]["id"],
        events[0]["response"]["id"]
    );
}
