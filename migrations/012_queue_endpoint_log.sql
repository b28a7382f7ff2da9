-- The delivery log's live arm: an endpoint's queued deliveries, newest id first.
--
-- Without it the page query found them either through delivery_queue_due (every queued row of
-- the endpoint, then a sort) or by walking the primary key backwards past every other
-- endpoint's rows: with a backlog of a million deliveries elsewhere, the newest page of a
-- quiet endpoint's log took 230 ms instead of 20. One more index on the hot queue, written at
-- fan-out and removed with the row.
CREATE INDEX delivery_queue_endpoint_log ON delivery_queue (endpoint_id, id);
