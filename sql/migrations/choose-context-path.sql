select pgvpd.choose_context_path();
