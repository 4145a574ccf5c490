from ipt_data.cli import entry

entry()
