//! Reads a consumed record's headers as bytes, names included.
//!
//! Kafka's protocol says a header name is a string, but nothing enforces it: a
//! producer can write any bytes. rdkafka 0.39's `Headers::try_get` (and so
//! `Headers::iter`) unwraps the name's UTF-8 conversion, so one record with a
//! non-UTF-8 header name panics the consumer; the offset is never committed and every
//! replica that takes the partition over dies on the same record. This module reads
//! the headers through librdkafka's C API instead (`rd_kafka_message_headers`,
//! `rd_kafka_header_get_all`), copies names and values as bytes, and leaves the
//! judging to the pipeline core (`inference::envelope`), which dead-letters such a
//! record like any other malformed one.
//!
//! The only `unsafe` in triage. What makes it sound: the message outlives the calls
//! (it is borrowed for the whole function), librdkafka returns pointers into the
//! message's own header list, valid while the message is, and every byte is copied
//! before the function returns.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::ptr;

use rdkafka::bindings as rd;
use rdkafka::message::BorrowedMessage;

/// A record's headers in order: (name, value) as bytes; a null value reads as empty.
pub(super) fn read(message: &BorrowedMessage<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut headers: *mut rd::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `message.ptr()` is the live librdkafka message `message` owns; the call
    // only writes the out-pointer, which then points into that message.
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: `headers` is the message's valid header list (checked non-null above).
    let count = unsafe { rd::rd_kafka_header_cnt(headers) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size: usize = 0;
        // SAFETY: `idx < count`; the out-pointers are valid locals.
        let err =
            unsafe { rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka keeps every header name NUL-terminated.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = if value.is_null() || size == 0 {
            Vec::new()
        } else {
            // SAFETY: `value` points to `size` bytes inside the message's header list.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        out.push((name, value));
    }
    out
}
