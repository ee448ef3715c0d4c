-- Live boards (status, task board) are messages edited in place; remember them across restarts.
CREATE TABLE board_messages (
    board       TEXT    NOT NULL,             -- 'status', 'tasks'
    part        INTEGER NOT NULL DEFAULT 0,   -- a board split over several messages
    channel_id  TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    content_sha TEXT,                         -- what was last rendered, to skip edits that change nothing
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (board, part)
);
