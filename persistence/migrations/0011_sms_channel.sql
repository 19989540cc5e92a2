-- SMS, a third channel: the SMS text of a template version (NULL: an SMS carries the push body,
-- or else the text body). Users already have `phone_number`; deliveries, attempts and the DLQ
-- name their channel as text.
ALTER TABLE templates ADD COLUMN sms_body TEXT;
