"""The porting agent: tools the LLM calls and, later, the loop that drives them."""
