-- A template version may name fallback channels (README "Fallback channels"): where its content
-- goes when an email or SMS is suppressed, bounces or is not delivered. NULL: none (a request's
-- own `fallback_channels` wins over the template's).
ALTER TABLE templates ADD COLUMN fallback_channels TEXT[];
