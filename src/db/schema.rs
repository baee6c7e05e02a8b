// Written by hand to match migrations/{postgres,sqlite}; both backends share it.

diesel::table! {
    acme_accounts (id) {
        id -> Text,
        directory_url -> Text,
        credentials_encrypted -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    service_instances (id) {
        id -> Text,
        service_id -> Text,
        plan_id -> Text,
        organization_guid -> Text,
        space_guid -> Text,
        context -> Nullable<Text>,
        parameters -> Text,
        domains -> Text,
        state -> Text,
        current_certificate_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    instance_domains (domain) {
        domain -> Text,
        instance_id -> Text,
    }
}

diesel::table! {
    operations (id) {
        id -> Text,
        instance_id -> Text,
        kind -> Text,
        state -> Text,
        next_step -> Integer,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        description -> Text,
        last_error -> Nullable<Text>,
        request -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    operation_steps (id) {
        id -> Text,
        operation_id -> Text,
        step -> Text,
        replica -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    certificates (id) {
        id -> Text,
        instance_id -> Text,
        operation_id -> Text,
        domains -> Text,
        private_key_encrypted -> Nullable<Binary>,
        order_url -> Nullable<Text>,
        leaf_pem -> Nullable<Text>,
        chain_pem -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        issued_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    challenges (id) {
        id -> Text,
        certificate_id -> Text,
        domain -> Text,
        authorization_url -> Text,
        challenge_url -> Text,
        txt_name -> Text,
        txt_value -> Text,
        answered_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    dns_records (id) {
        id -> Text,
        instance_id -> Text,
        name -> Text,
        record_type -> Text,
        value -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    cloud_resources (id) {
        id -> Text,
        instance_id -> Text,
        kind -> Text,
        name -> Text,
        certificate_id -> Nullable<Text>,
        arn -> Nullable<Text>,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    bindings (id) {
        id -> Text,
        instance_id -> Text,
        service_id -> Text,
        plan_id -> Text,
        app_guid -> Nullable<Text>,
        bind_resource -> Nullable<Text>,
        parameters -> Text,
        certificate_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(instance_domains -> service_instances (instance_id));
diesel::joinable!(operations -> service_instances (instance_id));
diesel::joinable!(operation_steps -> operations (operation_id));
diesel::joinable!(certificates -> service_instances (instance_id));
diesel::joinable!(challenges -> certificates (certificate_id));
diesel::joinable!(dns_records -> service_instances (instance_id));
diesel::joinable!(cloud_resources -> service_instances (instance_id));
diesel::joinable!(bindings -> service_instances (instance_id));

diesel::allow_tables_to_appear_in_same_query!(
    acme_accounts,
    service_instances,
    instance_domains,
    operations,
    operation_steps,
    certificates,
    challenges,
    dns_records,
    cloud_resources,
    bindings,
);
