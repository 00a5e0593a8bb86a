//! The macros that expand the suite into one `#[test]` per case
//! ([`conformance_suite!`](crate::conformance_suite)), and the list of cases they
//! expand.

/// Calls `$callback!` with `($($args)*)` followed by every case, as
/// `name [capability ...]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            delivers_to_subscribed_nodes_only [],
            unsubscribe_stops_delivery [],
            rooms_are_independent [],
            bidirectional [],
            many_nodes_each_get_one_copy [],
            echo_is_suppressed [],
            except_is_honoured_locally_and_remotely [],
            local_only_never_crosses [],
            metadata_reaches_remote_filter [],
            golden_vector_messages_round_trip [],
            per_publisher_order_is_kept [],
            concurrent_publishers_lose_nothing [],
            subscribe_and_unsubscribe_are_idempotent [],
            join_leave_races_settle [],
            disconnect_stops_delivery_and_is_idempotent [],
            ten_thousand_rooms [],
            one_mib_payload [],
            odd_room_names [],
            malformed_payloads_are_skipped_and_counted [raw_publish],
            reconnect_resubscribes_and_emits_reconnected [fault_injection],
            medium_loss_is_reported_and_status_follows [fault_injection],
            emitter_reaches_every_node [emitter],
            nodes_see_each_other_and_leave [control],
            cluster_queries_sum_every_node [control],
            silent_node_makes_answers_incomplete_then_expires [control],
            cut_off_nodes_expire_and_return [fault_injection control],
            history_replays_after_a_position [history],
            history_switch_has_no_gap_or_duplicate [history],
            history_gap_when_it_cannot_cover [history],
            history_reads_page_by_page [history],
            history_recovers_after_a_node_outage [node_fault_injection history],
            publish_fails_fast_while_down [fault_injection],
            full_inbound_queue_drops_and_counts [],
            message_ids_are_delivered_once [],
            dropped_receiver_leaves_rooms [],
            slow_connection_is_disconnected [],
        }
    };
}

/// Calls `$callback!` with `($($args)*)` followed by every capability's
/// name, in [`Capability::ALL`](crate::Capability::ALL)'s order: what
/// `capabilities = all` declares.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_all_capabilities {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            fault_injection, raw_publish, emitter, control, history, node_fault_injection
        }
    };
}

/// `[Capability, ...]` for the names, as [`Capability::ALL`](crate::Capability::ALL) is built.
#[doc(hidden)]
#[macro_export]
macro_rules! __capabilities {
    (() $($cap:ident),* $(,)?) => {
        [$($crate::__capability!($cap)),*]
    };
}

/// [`conformance_suite!`](crate::conformance_suite) for `$harness` with the names as its
/// capability list: how `capabilities = all` expands.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_with {
    (($harness:ty) $($cap:ident),* $(,)?) => {
        $crate::conformance_suite!($harness, capabilities = [$($cap),*]);
    };
}

/// The [`Capability`](crate::Capability) named by an identifier; a compile error for any other.
#[doc(hidden)]
#[macro_export]
macro_rules! __capability {
    (fault_injection) => {
        $crate::Capability::FaultInjection
    };
    (raw_publish) => {
        $crate::Capability::RawPublish
    };
    (emitter) => {
        $crate::Capability::Emitter
    };
    (control) => {
        $crate::Capability::Control
    };
    (history) => {
        $crate::Capability::History
    };
    (node_fault_injection) => {
        $crate::Capability::NodeFaultInjection
    };
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "unknown conformance capability `",
            ::core::stringify!($other),
            "`: expected fault_injection, raw_publish, emitter, control, history or \
             node_fault_injection"
        ))
    };
}

/// Expands `{ yes }` if `$cap` is in the list, else `{ no }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __if_declared {
    (fault_injection [fault_injection $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (raw_publish [raw_publish $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (emitter [emitter $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (control [control $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (history [history $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (node_fault_injection [node_fault_injection $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    ($cap:ident [$other:ident $(, $($rest:tt)*)?] $yes:tt $no:tt) => {
        $crate::__if_declared! { $cap [$($($rest)*)?] $yes $no }
    };
    ($cap:ident [] $yes:tt {$($no:tt)*}) => { $($no)* };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_tests {
    (($harness:ty, $declared:tt) $($case:ident [$($need:ident)*]),* $(,)?) => {
        $(
            $crate::__case_test! { ($harness, $declared) $case [$($need)*] }
        )*
    };
}

/// One case's test: plain when every capability it needs is declared,
/// ignored (naming the first missing one) otherwise.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_test {
    (($harness:ty, $declared:tt) $case:ident []) => {
        #[test]
        fn $case() {
            $crate::__private::run_test::<$harness, _, _>(
                ::core::stringify!($case),
                true,
                $crate::cases::$case::<$harness>,
            );
        }
    };
    (($harness:ty, $declared:tt) $case:ident [$need:ident $($rest:ident)*]) => {
        $crate::__if_declared! { $need $declared
            { $crate::__case_test! { ($harness, $declared) $case [$($rest)*] } }
            { $crate::__ignored_test! { $harness, $case, $need } }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ignored_test {
    ($harness:ty, $case:ident, fault_injection) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability fault_injection" }
    };
    ($harness:ty, $case:ident, raw_publish) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability raw_publish" }
    };
    ($harness:ty, $case:ident, emitter) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability emitter" }
    };
    ($harness:ty, $case:ident, control) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability control" }
    };
    ($harness:ty, $case:ident, history) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability history" }
    };
    ($harness:ty, $case:ident, node_fault_injection) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability node_fault_injection" }
    };
    (@ $harness:ty, $case:ident, $why:literal) => {
        #[test]
        #[ignore = $why]
        fn $case() {
            $crate::__private::run_test::<$harness, _, _>(
                ::core::stringify!($case),
                false,
                $crate::cases::$case::<$harness>,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_all {
    (($harness:ty, $reports:ident) $($case:ident [$($need:ident)*]),* $(,)?) => {
        $(
            $reports.push(
                $crate::run_case::<$harness, _, _>(stringify!($case), $crate::cases::$case::<$harness>)
                    .await,
            );
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __names {
    (() $($case:ident [$($need:ident)*]),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_infos {
    (() $($case:ident [$($need:ident)*]),* $(,)?) => {
        &[$($crate::CaseInfo {
            name: stringify!($case),
            needs: &[$($crate::__capability!($need)),*],
        }),*]
    };
}

/// Expands the whole suite for `$harness` into one `#[test]` per case, plus
/// `declared_capabilities_match_the_harness`.
///
/// `capabilities = [...]` lists the optional [`Capability`](crate::Capability)s the harness and
/// its adapter offer, by name: `fault_injection`, `raw_publish`,
/// `node_fault_injection` (the harness's [`Capabilities`](crate::Capabilities)),
/// `emitter`, `control`, `history` (the adapter's `AdapterCapabilities`). A case that needs a capability not
/// listed is generated `#[ignore = "needs capability ..."]`, so `cargo test`
/// shows it as ignored; `cargo test -- --include-ignored` runs it anyway
/// (it then reports itself skipped). Without the list, no optional
/// capability is declared. `capabilities = all` declares every capability
/// (a medium that offers them all, such as the memory bus).
///
/// The list must match what the harness and the adapter report: a case that
/// needs a declared capability and finds it missing fails, and
/// `declared_capabilities_match_the_harness` fails for an offered capability
/// not declared. With `ROOMS_CONFORMANCE_NO_SKIP=1` that test also fails while
/// any case is ignored.
///
/// The tests run on the suite's own multi-threaded tokio runtime; the test
/// crate needs no tokio, only `rooms-conformance`.
///
/// ```ignore
/// rooms_conformance::conformance_suite!(MyHarness, capabilities = [fault_injection, emitter]);
/// rooms_conformance::conformance_suite!(MyOtherHarness, capabilities = all);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty $(,)?) => {
        $crate::conformance_suite!($harness, capabilities = []);
    };
    ($harness:ty, capabilities = all $(,)?) => {
        $crate::__with_all_capabilities!(__suite_with!($harness));
    };
    ($harness:ty, capabilities = [$($cap:ident),* $(,)?] $(,)?) => {
        const _: &[$crate::Capability] = &[$($crate::__capability!($cap)),*];
        $crate::__with_cases!(__expand_tests!($harness, [$($cap),*]));
        #[test]
        fn declared_capabilities_match_the_harness() {
            $crate::__private::check_declared::<$harness>(&[$($crate::__capability!($cap)),*]);
        }
    };
}
