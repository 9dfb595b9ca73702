# Earlier versions counted the instances (terraform_data.tentacle[0] was <name_prefix>-1); they are now keyed by
# their number, so the package can remove one by name. These blocks carry an existing fleet over without stopping
# any instance. 100 is the most the DAGs' instance_count param allows; Terraform ignores blocks with nothing to move.

moved {
  from = terraform_data.tentacle[0]
  to   = terraform_data.tentacle["1"]
}

moved {
  from = terraform_data.tentacle[1]
  to   = terraform_data.tentacle["2"]
}

moved {
  from = terraform_data.tentacle[2]
  to   = terraform_data.tentacle["3"]
}

moved {
  from = terraform_data.tentacle[3]
  to   = terraform_data.tentacle["4"]
}

moved {
  from = terraform_data.tentacle[4]
  to   = terraform_data.tentacle["5"]
}

moved {
  from = terraform_data.tentacle[5]
  to   = terraform_data.tentacle["6"]
}

moved {
  from = terraform_data.tentacle[6]
  to   = terraform_data.tentacle["7"]
}

moved {
  from = terraform_data.tentacle[7]
  to   = terraform_data.tentacle["8"]
}

moved {
  from = terraform_data.tentacle[8]
  to   = terraform_data.tentacle["9"]
}

moved {
  from = terraform_data.tentacle[9]
  to   = terraform_data.tentacle["10"]
}

moved {
  from = terraform_data.tentacle[10]
  to   = terraform_data.tentacle["11"]
}

moved {
  from = terraform_data.tentacle[11]
  to   = terraform_data.tentacle["12"]
}

moved {
  from = terraform_data.tentacle[12]
  to   = terraform_data.tentacle["13"]
}

moved {
  from = terraform_data.tentacle[13]
  to   = terraform_data.tentacle["14"]
}

moved {
  from = terraform_data.tentacle[14]
  to   = terraform_data.tentacle["15"]
}

moved {
  from = terraform_data.tentacle[15]
  to   = terraform_data.tentacle["16"]
}

moved {
  from = terraform_data.tentacle[16]
  to   = terraform_data.tentacle["17"]
}

moved {
  from = terraform_data.tentacle[17]
  to   = terraform_data.tentacle["18"]
}

moved {
  from = terraform_data.tentacle[18]
  to   = terraform_data.tentacle["19"]
}

moved {
  from = terraform_data.tentacle[19]
  to   = terraform_data.tentacle["20"]
}

moved {
  from = terraform_data.tentacle[20]
  to   = terraform_data.tentacle["21"]
}

moved {
  from = terraform_data.tentacle[21]
  to   = terraform_data.tentacle["22"]
}

moved {
  from = terraform_data.tentacle[22]
  to   = terraform_data.tentacle["23"]
}

moved {
  from = terraform_data.tentacle[23]
  to   = terraform_data.tentacle["24"]
}

moved {
  from = terraform_data.tentacle[24]
  to   = terraform_data.tentacle["25"]
}

moved {
  from = terraform_data.tentacle[25]
  to   = terraform_data.tentacle["26"]
}

moved {
  from = terraform_data.tentacle[26]
  to   = terraform_data.tentacle["27"]
}

moved {
  from = terraform_data.tentacle[27]
  to   = terraform_data.tentacle["28"]
}

moved {
  from = terraform_data.tentacle[28]
  to   = terraform_data.tentacle["29"]
}

moved {
  from = terraform_data.tentacle[29]
  to   = terraform_data.tentacle["30"]
}

moved {
  from = terraform_data.tentacle[30]
  to   = terraform_data.tentacle["31"]
}

moved {
  from = terraform_data.tentacle[31]
  to   = terraform_data.tentacle["32"]
}

moved {
  from = terraform_data.tentacle[32]
  to   = terraform_data.tentacle["33"]
}

moved {
  from = terraform_data.tentacle[33]
  to   = terraform_data.tentacle["34"]
}

moved {
  from = terraform_data.tentacle[34]
  to   = terraform_data.tentacle["35"]
}

moved {
  from = terraform_data.tentacle[35]
  to   = terraform_data.tentacle["36"]
}

moved {
  from = terraform_data.tentacle[36]
  to   = terraform_data.tentacle["37"]
}

moved {
  from = terraform_data.tentacle[37]
  to   = terraform_data.tentacle["38"]
}

moved {
  from = terraform_data.tentacle[38]
  to   = terraform_data.tentacle["39"]
}

moved {
  from = terraform_data.tentacle[39]
  to   = terraform_data.tentacle["40"]
}

moved {
  from = terraform_data.tentacle[40]
  to   = terraform_data.tentacle["41"]
}

moved {
  from = terraform_data.tentacle[41]
  to   = terraform_data.tentacle["42"]
}

moved {
  from = terraform_data.tentacle[42]
  to   = terraform_data.tentacle["43"]
}

moved {
  from = terraform_data.tentacle[43]
  to   = terraform_data.tentacle["44"]
}

moved {
  from = terraform_data.tentacle[44]
  to   = terraform_data.tentacle["45"]
}

moved {
  from = terraform_data.tentacle[45]
  to   = terraform_data.tentacle["46"]
}

moved {
  from = terraform_data.tentacle[46]
  to   = terraform_data.tentacle["47"]
}

moved {
  from = terraform_data.tentacle[47]
  to   = terraform_data.tentacle["48"]
}

moved {
  from = terraform_data.tentacle[48]
  to   = terraform_data.tentacle["49"]
}

moved {
  from = terraform_data.tentacle[49]
  to   = terraform_data.tentacle["50"]
}

moved {
  from = terraform_data.tentacle[50]
  to   = terraform_data.tentacle["51"]
}

moved {
  from = terraform_data.tentacle[51]
  to   = terraform_data.tentacle["52"]
}

moved {
  from = terraform_data.tentacle[52]
  to   = terraform_data.tentacle["53"]
}

moved {
  from = terraform_data.tentacle[53]
  to   = terraform_data.tentacle["54"]
}

moved {
  from = terraform_data.tentacle[54]
  to   = terraform_data.tentacle["55"]
}

moved {
  from = terraform_data.tentacle[55]
  to   = terraform_data.tentacle["56"]
}

moved {
  from = terraform_data.tentacle[56]
  to   = terraform_data.tentacle["57"]
}

moved {
  from = terraform_data.tentacle[57]
  to   = terraform_data.tentacle["58"]
}

moved {
  from = terraform_data.tentacle[58]
  to   = terraform_data.tentacle["59"]
}

moved {
  from = terraform_data.tentacle[59]
  to   = terraform_data.tentacle["60"]
}

moved {
  from = terraform_data.tentacle[60]
  to   = terraform_data.tentacle["61"]
}

moved {
  from = terraform_data.tentacle[61]
  to   = terraform_data.tentacle["62"]
}

moved {
  from = terraform_data.tentacle[62]
  to   = terraform_data.tentacle["63"]
}

moved {
  from = terraform_data.tentacle[63]
  to   = terraform_data.tentacle["64"]
}

moved {
  from = terraform_data.tentacle[64]
  to   = terraform_data.tentacle["65"]
}

moved {
  from = terraform_data.tentacle[65]
  to   = terraform_data.tentacle["66"]
}

moved {
  from = terraform_data.tentacle[66]
  to   = terraform_data.tentacle["67"]
}

moved {
  from = terraform_data.tentacle[67]
  to   = terraform_data.tentacle["68"]
}

moved {
  from = terraform_data.tentacle[68]
  to   = terraform_data.tentacle["69"]
}

moved {
  from = terraform_data.tentacle[69]
  to   = terraform_data.tentacle["70"]
}

moved {
  from = terraform_data.tentacle[70]
  to   = terraform_data.tentacle["71"]
}

moved {
  from = terraform_data.tentacle[71]
  to   = terraform_data.tentacle["72"]
}

moved {
  from = terraform_data.tentacle[72]
  to   = terraform_data.tentacle["73"]
}

moved {
  from = terraform_data.tentacle[73]
  to   = terraform_data.tentacle["74"]
}

moved {
  from = terraform_data.tentacle[74]
  to   = terraform_data.tentacle["75"]
}

moved {
  from = terraform_data.tentacle[75]
  to   = terraform_data.tentacle["76"]
}

moved {
  from = terraform_data.tentacle[76]
  to   = terraform_data.tentacle["77"]
}

moved {
  from = terraform_data.tentacle[77]
  to   = terraform_data.tentacle["78"]
}

moved {
  from = terraform_data.tentacle[78]
  to   = terraform_data.tentacle["79"]
}

moved {
  from = terraform_data.tentacle[79]
  to   = terraform_data.tentacle["80"]
}

moved {
  from = terraform_data.tentacle[80]
  to   = terraform_data.tentacle["81"]
}

moved {
  from = terraform_data.tentacle[81]
  to   = terraform_data.tentacle["82"]
}

moved {
  from = terraform_data.tentacle[82]
  to   = terraform_data.tentacle["83"]
}

moved {
  from = terraform_data.tentacle[83]
  to   = terraform_data.tentacle["84"]
}

moved {
  from = terraform_data.tentacle[84]
  to   = terraform_data.tentacle["85"]
}

moved {
  from = terraform_data.tentacle[85]
  to   = terraform_data.tentacle["86"]
}

moved {
  from = terraform_data.tentacle[86]
  to   = terraform_data.tentacle["87"]
}

moved {
  from = terraform_data.tentacle[87]
  to   = terraform_data.tentacle["88"]
}

moved {
  from = terraform_data.tentacle[88]
  to   = terraform_data.tentacle["89"]
}

moved {
  from = terraform_data.tentacle[89]
  to   = terraform_data.tentacle["90"]
}

moved {
  from = terraform_data.tentacle[90]
  to   = terraform_data.tentacle["91"]
}

moved {
  from = terraform_data.tentacle[91]
  to   = terraform_data.tentacle["92"]
}

moved {
  from = terraform_data.tentacle[92]
  to   = terraform_data.tentacle["93"]
}

moved {
  from = terraform_data.tentacle[93]
  to   = terraform_data.tentacle["94"]
}

moved {
  from = terraform_data.tentacle[94]
  to   = terraform_data.tentacle["95"]
}

moved {
  from = terraform_data.tentacle[95]
  to   = terraform_data.tentacle["96"]
}

moved {
  from = terraform_data.tentacle[96]
  to   = terraform_data.tentacle["97"]
}

moved {
  from = terraform_data.tentacle[97]
  to   = terraform_data.tentacle["98"]
}

moved {
  from = terraform_data.tentacle[98]
  to   = terraform_data.tentacle["99"]
}

moved {
  from = terraform_data.tentacle[99]
  to   = terraform_data.tentacle["100"]
}
