"""The chat history store: lines get their id and are kept, and are read back by id.

`lines` holds the values and the `HistoryStore` interface. `memory` keeps lines
in a list (tests) or nowhere (``--store none``); `sql` keeps them in SQLite
(`sqlite`) or PostgreSQL (`postgresql`) on `worker` threads; `url` makes one
from ``--store``. `writer` stands between the chat room and a store, so that a
store that is down never stops live chat, and one that is slow slows the
chatters down rather than lose lines; `trimmer` keeps history to
``--history-max`` and ``--history-max-bytes`` and gives the space back. This
package imports nothing else of nea's.
"""
