"""The method's pieces (SPEC 1-3): the synthesizer's wire format, the model's tokenizer and the prompt budget,
what a pair is, how a chain is carried and rendered."""
