"""``costkit guard``: the pre-submit budget check a CI job runs before it sends a batch of requests.

The stage reads request files (``sources``), measures every request's tokens and worst-case cost with
the same pre-flight ``costkit check`` uses (``measure``), compares them with an earlier run or the same
files at a git ref (``diff``), decides pass / warn / fail against the limits given (``checks``) and
writes the result as a table, versioned JSON and a Markdown PR comment (``report``, ``render``).
``cli`` is the click command; nothing here writes to a ledger.
"""
