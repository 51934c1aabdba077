def run():
    return "attested source"
